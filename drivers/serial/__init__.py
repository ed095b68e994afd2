"""Serial-port drivers (pyserial ports, sans-I/O framers for ASTM, oximeters, modem AT).

May import what drivers/ may; nothing of the BLE side.
"""
