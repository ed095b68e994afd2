"""A simulated BlueZ: the real, unmodified bleak runs against it on a private D-Bus bus.

- ``bus``: a private ``dbus-daemon`` ("system"-like bus) in a temporary directory.
- ``objects`` / ``bluez`` / ``device`` / ``agent``: the ``org.bluez`` service (adapter, devices,
  GATT services, characteristics, descriptors, notify sessions, pairing through an Agent1).
- ``peripheral`` / ``profiles`` / ``stored`` / ``standard``: virtual health devices, one class per
  GATT profile, built from the project's own encoders, with scriptable misbehaviour.
- ``rig``: ``SimulatedBluez``, what tests, ``make demo`` and ``make hil`` start;
  ``scenario`` + ``python -m rig.ble``: the same from a JSON scenario file.

Facts this follows are in /work/shared/reference/bluez-dbus.md and BlueZ's public D-Bus API
documentation (org.bluez.Adapter, Device, GattService/Characteristic/Descriptor, AgentManager,
Agent).

May import the router's packages (drivers.ble's encoders) and the rest of rig/; never provider.
"""
