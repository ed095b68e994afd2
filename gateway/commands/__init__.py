"""Signed commands from the provider's command centre (issue 20, the downlink).

``envelope``: the wire form and the pure verification (signature, target, validity, counter).
``registry``: command name -> argument validator + handler; ``update.offer`` and later commands
register here. ``ledger``: the replay counter and the accepted-but-unfinished commands, durable.
``runner``: the asyncio loop that takes raw messages, verifies, seals the audit records and runs
handlers one at a time, under rate and size limits.

May import gateway's shared modules only: the daemon (gateway/daemon/commands.py) wires the
handlers that touch the pipeline, the configuration and provisioning.
"""
