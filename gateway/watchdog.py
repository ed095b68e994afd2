"""systemd watchdog policy: ping only while every critical loop shows progress.

A free-running timer would keep pinging while the outbox writer or the uplink is wedged, and
systemd would never restart the service. Each critical loop records the event-loop time of its
last turn (``last_progress``, idle waits count); the daemon's watchdog task asks
:func:`stalled_loops` before each ``WATCHDOG=1`` and withholds the ping while any loop is
stalled, so systemd restarts the service after WatchdogSec (nothing is lost: the outbox is
durable and devices keep what was not confirmed).
"""

from __future__ import annotations

from collections.abc import Mapping


def stalled_loops(now: float, progress: Mapping[str, float], stall_s: float) -> list[str]:
    """Names of the loops whose last progress is older than ``stall_s`` (sorted)."""
    return sorted(name for name, t in progress.items() if now - t > stall_s)


# Drivers are not in the check yet: a driver's generator only turns while its pump pulls from it,
# and the pump deliberately stops pulling while the outbox quota is reached (possibly for hours
# of an outage), so "no turn" would restart a healthy daemon. They need a progress mark of their
# own loop that the pump's deliberate waits do not freeze.
