"""Every gatewayctl command is run against a running gatewayd on the simulated rig (issue 7).

LIVE maps each command of gateway.cli.main.COMMANDS to the tests that run it against a live daemon.
Adding a command without such a test fails here, as does an entry naming a test that does not
exist, does not run the command, or lives in a module that never starts a daemon.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from gateway.cli.main import COMMANDS

ROOT = Path(__file__).resolve().parent.parent
LIVE_MODULE = "tests/integration/test_commands_live.py"
LIFECYCLE = (
    "tests/provisioning/test_lifecycle.py::"
    "test_full_lifecycle_enrol_collect_return_with_kills_and_enrol_again"
)
RETURN_FORCE = (
    "tests/provisioning/test_return_force.py::"
    "test_undeliverable_records_block_the_return_until_forced_and_are_counted"
)

LIVE: dict[str, tuple[str, ...]] = {
    "version": (f"{LIVE_MODULE}::test_version_prints_the_installed_version",),
    "devices": (
        f"{LIVE_MODULE}::test_devices_lists_the_bound_devices_and_none_silent",
        "tests/integration/test_control.py::"
        "test_devices_uplink_test_and_selftest_against_a_running_daemon",
    ),
    "uplink-test": (f"{LIVE_MODULE}::test_uplink_test_reaches_the_broker_beside_the_daemon",),
    "selftest": (f"{LIVE_MODULE}::test_selftest_passes_the_keys_outbox_and_daemon",),
    "support-bundle": (
        f"{LIVE_MODULE}::"
        "test_support_bundle_holds_the_daemons_story_but_no_key_and_no_clinical_value",
    ),
    "decode": (f"{LIVE_MODULE}::test_decode_shows_a_captured_payloads_value",),
    "status": (
        f"{LIVE_MODULE}::test_status_shows_the_uplink_and_both_devices_connected",
        "tests/integration/test_control.py::test_status_shows_a_healthy_gateway_and_exits_0",
        "tests/integration/test_control.py::test_status_says_unhealthy_when_the_broker_is_gone",
    ),
    "config-check": (f"{LIVE_MODULE}::test_config_check_names_what_the_file_sets_up",),
    "outbox": (f"{LIVE_MODULE}::test_outbox_counts_sealed_records_of_the_running_daemon",),
    "logs": (f"{LIVE_MODULE}::test_logs_shows_the_daemons_own_recent_events_redacted",),
    "scan": (
        f"{LIVE_MODULE}::"
        "test_scan_marks_the_bound_device_bound_and_the_other_a_neighbour_without_their_data",
    ),
    # Enrolment comes before the daemon can run (it refuses an unenrolled router, exit 2):
    # these enrol and then run gatewayd on what enrolment wrote.
    "enrol": (LIFECYCLE, RETURN_FORCE),
    "install-check": (LIFECYCLE,),
    "return": (LIFECYCLE, RETURN_FORCE),
    "lifecycle": (LIFECYCLE,),
}


def test_every_command_has_a_live_test_and_every_entry_is_a_command() -> None:
    assert sorted(LIVE) == sorted(COMMANDS)
    assert all(LIVE.values())


def _function(node_id: str) -> tuple[ast.Module, ast.FunctionDef]:
    path, _, name = node_id.partition("::")
    tree = ast.parse((ROOT / path).read_text(), filename=path)
    found = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name]
    assert found, f"{node_id}: no such test"
    return tree, found[0]


@pytest.mark.parametrize(
    ("command", "node_id"), [(c, n) for c, nodes in LIVE.items() for n in nodes]
)
def test_each_named_test_exists_runs_the_command_and_starts_a_daemon(
    command: str, node_id: str
) -> None:
    tree, function = _function(node_id)
    strings = {
        n.value
        for n in ast.walk(function)
        if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }
    assert command in strings, f"{node_id} never names the command {command!r}"
    # The daemon comes from the rig (Rig.start_daemon), in the test or a fixture of its module.
    calls = {
        n.func.attr
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
    }
    assert "start_daemon" in calls, f"{node_id}: its module never starts gatewayd"
    marks = ast.unparse(tree)
    assert "pytest.mark.integration" in marks, f"{node_id}: not an integration test"
