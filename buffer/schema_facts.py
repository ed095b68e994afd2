"""The outbox schema facts a release declares, as plain literals (no imports).

Software updates (gateway/updates) must know, for a release that is not running, which outbox
schema it writes and which it can still open: packaging/build-deb.sh and ``homecare-provider
release build`` read this file with ``runpy.run_path`` (no package import, so a cross-built tree
works), and buffer/schema.py refuses to import when these disagree with its migrations.

Policy (docs/operations.md, "Software updates"): migrations are *forward-compatible*. A database
at schema version N records the lowest software schema version that may open it
(``OUTBOX_MIN_READER``). Older software that knows this rule (schema >= 3) opens a newer database
as long as its own schema version is at least that floor; the updater refuses a release whose
floor is above the schema of the release it would fall back to, so a rollback never meets a
database it cannot open.
"""

OUTBOX_SCHEMA = 3  # len(buffer.schema.MIGRATIONS)
OUTBOX_MIN_READER = 3  # the oldest schema version that can still read and write ours
