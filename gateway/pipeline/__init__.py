"""From driver to outbox: the group-commit writer (ingest), the pump that confirms to a device
only after the commit (pump), loop marks and the watchdog (watchdog), health reports (health),
the SQLite worker thread (dbthread), the seams and their fakes (seams, fakes).

May import gateway's shared modules, gateway.seal, gateway.fhir and buffer; never the CLI.
"""
