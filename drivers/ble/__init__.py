"""Bluetooth Low Energy drivers (bleak central, one module per GATT health profile)."""
