"""The GATT health profiles the BLE driver reads: what to subscribe to and how readings travel.

Kept apart from :mod:`drivers.ble.session` (which needs bleak and D-Bus) so that configuration
checks, ``gatewayctl`` and a daemon without BLE devices do not import the BLE stack.
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.ble.blood_pressure import BP_MEASUREMENT_UUID, INTERMEDIATE_CUFF_PRESSURE_UUID
from drivers.ble.cgm import CGM_MEASUREMENT_UUID
from drivers.ble.ghs import LIVE_HEALTH_OBSERVATIONS_UUID, STORED_HEALTH_OBSERVATIONS_UUID
from drivers.ble.glucose import GLUCOSE_MEASUREMENT_UUID
from drivers.ble.glucose_context import GLUCOSE_CONTEXT_UUID
from drivers.ble.heart_rate import HEART_RATE_MEASUREMENT_UUID
from drivers.ble.pulse_oximeter import CONTINUOUS_UUID, SPOT_CHECK_UUID
from drivers.ble.thermometer import INTERMEDIATE_TEMPERATURE_UUID, TEMPERATURE_MEASUREMENT_UUID
from drivers.ble.weight_scale import WEIGHT_MEASUREMENT_UUID


@dataclass(frozen=True, slots=True)
class Profile:
    """What the driver subscribes to for one kind of device, and how its readings travel."""

    measurement: int  # the characteristic the device must have
    optional: tuple[int, ...] = ()  # subscribed too when the device has them
    racp: bool = False  # stored records behind a Record Access Control Point
    stream: frozenset[int] = frozenset()  # characteristics with continuous readings (lane STREAM)
    backlog: bool = False  # pushes its stored readings on subscription: de-duplicate them
    # Set the device clock (Current Time) when it is off. Not for CGM: its record times count
    # from the Session Start Time, which carries its own zone; rewriting the sensor's wall
    # clock in our zone would only make the two disagree.
    sets_clock: bool = True
    racp_key_octets: int = 2  # a RACP record key (filter operand, count): GHS record numbers 4


PROFILES: dict[str, Profile] = {
    "thermometer": Profile(TEMPERATURE_MEASUREMENT_UUID, (INTERMEDIATE_TEMPERATURE_UUID,),
                           stream=frozenset({INTERMEDIATE_TEMPERATURE_UUID}), backlog=True),
    # Intermediate Cuff Pressure (0x2A36, notified while the cuff inflates) streams; the final
    # measurement (0x2A35) is a spot reading.
    "blood-pressure": Profile(BP_MEASUREMENT_UUID, (INTERMEDIATE_CUFF_PRESSURE_UUID,),
                              stream=frozenset({INTERMEDIATE_CUFF_PRESSURE_UUID}), backlog=True),
    "pulse-oximeter": Profile(SPOT_CHECK_UUID, backlog=True),
    # An oximeter worn continuously (0x2A5F, 1 Hz); its spot-checks are still taken, as SPOT.
    "pulse-oximeter-continuous": Profile(CONTINUOUS_UUID, (SPOT_CHECK_UUID,),
                                         stream=frozenset({CONTINUOUS_UUID}), backlog=True),
    "weight-scale": Profile(WEIGHT_MEASUREMENT_UUID, backlog=True),
    "glucose": Profile(GLUCOSE_MEASUREMENT_UUID, (GLUCOSE_CONTEXT_UUID,), racp=True),
    "heart-rate": Profile(HEART_RATE_MEASUREMENT_UUID,
                          stream=frozenset({HEART_RATE_MEASUREMENT_UUID})),
    # CGM records are keyed by time offset; RACP fetches what was measured while out of reach.
    "cgm": Profile(CGM_MEASUREMENT_UUID, racp=True, stream=frozenset({CGM_MEASUREMENT_UUID}),
                   sets_clock=False),
    # Generic Health Sensor (drivers/ble/ghs*.py): live observations once started through the GHS
    # Control Point, stored observations through RACP by uint32 record number; the device clock
    # is its Elapsed Time (0x2BF2), read, never set.
    "generic-health-sensor": Profile(LIVE_HEALTH_OBSERVATIONS_UUID,
                                     (STORED_HEALTH_OBSERVATIONS_UUID,), racp=True,
                                     sets_clock=False, racp_key_octets=4),
}
RACP_PROFILES = frozenset(name for name, p in PROFILES.items() if p.racp)
BACKLOG_PROFILES = frozenset(name for name, p in PROFILES.items() if p.backlog)
# Profiles whose main characteristic is continuous: the device's lane is STREAM.
STREAM_PROFILES = frozenset(name for name, p in PROFILES.items() if p.measurement in p.stream)
# Service UUIDs of the health profiles: an advertiser of one of them that is not ours is a
# neighbour's device (counted, never connected).
HEALTH_SERVICES = frozenset({0x1809, 0x1810, 0x1822, 0x181D, 0x1808, 0x180D, 0x181F, 0x1840})
