"""Software updates that can never strand a home (issue 20, part 2).

- ``release``: the signed release manifest (sign, verify, versions) - pure, no I/O.
- ``inbox``: what the unprivileged daemon does with an offered release: verify it and stream
  the artifact into ``<state_dir>/updates/inbox/<id>/`` with digest and size caps.
- ``updater``: the root updater (homecare-gateway-update.service): re-verifies everything,
  installs side by side under /opt/homecare-gateway/releases, switches ``current``, runs the
  health gate and rolls back on its own; resumes from its state file after a power cut.
- ``beacon``: the daemon's side of the health gate and the upstream reports of outcomes.

Imports the shared modules, ``gateway.config`` and ``buffer`` (schema facts) only.
"""
