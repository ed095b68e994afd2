"""Provisioning: identity keys and certificates, enrolment, episode binding, equipment return.

May import gateway's shared modules, gateway.seal, gateway.config, gateway.uplink and buffer.
"""
