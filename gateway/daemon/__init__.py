"""gatewayd: the composition root (main), the drivers built from the configuration (wiring),
the control socket's answers (answers) and sd_notify (notify).

May import everything in the router's packages except gateway.cli.main; nothing imports it but
tests.
"""
