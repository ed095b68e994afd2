"""The router's power supply: the UPS or battery backup as Network UPS Tools reports it.

``nut`` is the sans-I/O core of NUT's network protocol (``LIST VAR`` replies into a
:class:`~gateway.power.nut.UpsReading`), ``tracker`` the pure debounce that turns readings into
"mains lost" / "mains restored" events without flooding, ``client`` the asyncio query to upsd,
``monitor`` the poll loop the daemon runs (health snapshot, alarms, sealed events, the low-battery
clean stop and the marker the next start reports), ``poweroff`` the request to systemd-logind.

May import only gateway's shared modules; the daemon (gateway.daemon) wires it to the ingest
writer and the configuration.
"""
