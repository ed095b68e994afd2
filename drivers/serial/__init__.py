"""Serial-port drivers (pyserial ports, sans-I/O framers for ASTM, oximeters, modem AT)."""
