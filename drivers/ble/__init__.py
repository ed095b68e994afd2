"""Bluetooth Low Energy drivers (bleak central, one module per GATT health profile).

May import what drivers/ may, and provisioning.bundle (the bound device it unbonds).
"""
