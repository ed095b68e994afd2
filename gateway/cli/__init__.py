"""gatewayctl, the technicians' and logistics staff's command line: commands (main, logs,
provisioning, scan), their rendering (output, output_rich, tables), the diagnosis and its
catalogue, self-tests, the support bundle, the journal reader and the BLE scan.

May import every router package; nothing in the router imports it (the daemon runs without it).
"""
