"""The daemon's configuration: gateway.toml read and validated (settings), its [[ble_devices]]
(ble) and [[serial_devices]] (serial) tables, the [power] table (power), and the typed TOML
reader they share (tomltable).

May import gateway's shared modules, gateway.seal and the drivers it builds; never the CLI.
"""
