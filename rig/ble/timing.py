"""How fast the simulated radio and bluetoothd react. Defaults suit tests (fast); ``realistic()``
gives figures of the order real BlueZ shows, for demos and technician training."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Timing:
    # bleak registers its scan callback only after StartDiscovery returns: announce later.
    announce_delay_s: float = 0.02
    advertising_interval_s: float = 0.25  # RSSI updates while discovering
    connect_delay_s: float = 0.02  # LE connection establishment
    connect_timeout_s: float = 3.0  # an absent device: Connect fails after this
    resolve_delay_s: float = 0.01  # primary service discovery
    supervision_timeout_s: float = 0.2  # out of range -> the link is declared lost
    notify_interval_s: float = 0.002  # one notification / indication per connection event
    forget_after_s: float = 30.0  # unconnected, unbonded devices after discovery stops
    agent_timeout_s: float = 10.0  # an agent that does not answer fails the pairing
    gatt_cache: bool = False  # keep GATT objects exported after a disconnect

    @classmethod
    def realistic(cls) -> Timing:
        return cls(announce_delay_s=0.1, advertising_interval_s=1.0, connect_delay_s=0.3,
                   connect_timeout_s=20.0, resolve_delay_s=0.5, supervision_timeout_s=4.0,
                   notify_interval_s=0.03, forget_after_s=30.0, agent_timeout_s=25.0)
