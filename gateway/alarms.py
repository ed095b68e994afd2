"""The alarm codes the daemon raises in its health report, in one place.

An alarm is a short stable code (``outbox-quota-reached``) in the health report's ``alarms``
list; a code about one thing carries it after a colon (``device-silent:btmac:C0:FF:EE:00:00:31``,
``loop-stalled:uplink``). The command centre matches on these codes and ``gatewayctl status``
explains each one (gateway/cli/diagnosis.py), so raising sites use these constants and a unit test
(tests/test_diagnosis.py) checks that every code raised anywhere has an explanation.
"""

from __future__ import annotations

OUTBOX_REPLACED = "outbox-replaced"  # the outbox was damaged, kept aside and replaced (daemon.py)
OUTBOX_COMMIT_FAILING = "outbox-commit-failing"  # the ingest writer cannot commit (health.py)
OUTBOX_QUOTA_REACHED = "outbox-quota-reached"  # readings are refused for lack of space
STREAM_CHUNK_LOST = "stream-chunk-lost"  # a continuous-data chunk could not be stored (ingest.py)
UPLINK_REFUSED = "uplink-refused"  # the broker said no: CONNACK / PUBACK error, untrusted broker
VPN_DOWN = "vpn-down"  # the route to the broker bypasses the VPN: nothing is sent
VPN_HANDSHAKE_STALE = "vpn-handshake-stale"  # the WireGuard session is too old to carry traffic
WAN_UNEXPECTED_INTERFACE = "wan-unexpected-interface"  # neither the modem nor a listed exception
CERTIFICATE_EXPIRES_SOON = "certificate-expires-soon"  # the TLS client certificate, < 14 days
# Power (gateway/power/monitor.py): the UPS the router runs on, as NUT's upsd reports it.
POWER_ON_BATTERY = "power-on-battery"  # mains lost (confirmed, gateway/power/tracker.py rule 1)
POWER_BATTERY_LOW = "power-battery-low"  # on battery, LB or runtime below [power] low_runtime_s
POWER_FLAPPING = "power-flapping"  # more outages in the window than are sealed one by one
UPS_UNREACHABLE = "ups-unreachable"  # upsd does not answer or has no data for the UPS
UPS_SELF_TEST_FAILED = "ups-self-test-failed"  # the UPS's own battery test did not pass
# The signed-command ledger (state_dir/commands.db) cannot be opened: commands are not taken.
COMMAND_LEDGER_UNUSABLE = "command-ledger-unusable"

# Codes with a subject: ``<code>:<subject>``.
DEVICE_SILENT = "device-silent"  # subject: the device id; silent > 3 expected intervals
LOOP_STALLED = "loop-stalled"  # subject: the loop name (driver.<device>, outbox-writer, uplink)
# subject: "<driver name>:<ErrorType>" - a driver failed and is restarted (pipeline/supervise.py);
# the error's type only, never its text (it may quote device bytes).
DRIVER_RESTARTING = "driver-restarting"
# subject: the device id - it sent input we had to refuse (malformed, oversize) in the last minutes
DEVICE_INPUT_REJECTED = "device-input-rejected"

WITH_SUBJECT = frozenset({DEVICE_SILENT, LOOP_STALLED, DRIVER_RESTARTING, DEVICE_INPUT_REJECTED})
ALL = frozenset(
    {
        OUTBOX_REPLACED,
        OUTBOX_COMMIT_FAILING,
        OUTBOX_QUOTA_REACHED,
        STREAM_CHUNK_LOST,
        UPLINK_REFUSED,
        VPN_DOWN,
        VPN_HANDSHAKE_STALE,
        WAN_UNEXPECTED_INTERFACE,
        CERTIFICATE_EXPIRES_SOON,
        POWER_ON_BATTERY,
        POWER_BATTERY_LOW,
        POWER_FLAPPING,
        UPS_UNREACHABLE,
        UPS_SELF_TEST_FAILED,
        COMMAND_LEDGER_UNUSABLE,
    }
    | WITH_SUBJECT
)


def about(code: str, subject: str) -> str:
    """The alarm ``code`` about one ``subject`` (a device id or a loop name)."""
    return f"{code}:{subject}"


def split(alarm: str) -> tuple[str, str | None]:
    """(code, subject) of an alarm as reported; a subject only for the codes that take one."""
    code, sep, subject = alarm.partition(":")
    if sep and code in WITH_SUBJECT:
        return code, subject
    return alarm, None
