"""The simulated home: simulated BlueZ (ble/), pty device simulators (serial/), timer devices
(devices), the throwaway rig PKI (pki). Serves make demo, the tests, hw-tests/ and training.

May import the router's packages (to speak their protocols); the router never imports this, and
the .deb does not ship it.
"""
