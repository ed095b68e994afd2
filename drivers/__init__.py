"""Device side: one protocol per module, pure decoders kept apart from I/O (ble/, serial/).

May import gateway's shared modules, gateway.fhir (code tables) and gateway.pipeline (loop marks,
device health); never the simulated home, the provider, the daemon or the CLI.
"""
