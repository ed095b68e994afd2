"""The way out: MQTT 5 over mutual TLS (mqtt), the upload loop that deletes only on PUBACK
(upload), its retry classifier (retry), and the VPN / WAN route and handshake checks (link,
linkmon).

May import gateway's shared modules, gateway.config, gateway.pipeline and buffer; never the CLI.
"""
