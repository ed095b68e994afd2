"""``[power]`` in gateway.toml: absent is "no UPS configured"; every bad value is refused with
one line naming the key; ``gatewayctl status`` shows the power state in plain words."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import marks
from gateway.cli.main import power_text
from gateway.config.power import PowerConfig
from gateway.config.settings import load
from gateway.errors import ConfigError
from tests.factories import VALID_CONFIG, write_config


def test_no_power_table_means_no_ups(files: Path) -> None:
    assert load(write_config(files, VALID_CONFIG)).power is None


def test_a_power_table_with_defaults(files: Path) -> None:
    cfg = load(write_config(files, VALID_CONFIG + '\n[power]\nups = "ups"\n'))
    assert cfg.power == PowerConfig(ups="ups")
    assert cfg.power.low_runtime_s == 300.0
    assert cfg.power.power_off == "logind"


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ('host = "x"', "power.ups"),
        ('ups = "ups x"', "power.ups"),
        ('ups = "ups"\nport = 0', "power.port"),
        ('ups = "ups"\nlow_runtime_s = 5', "power.low_runtime_s"),
        ('ups = "ups"\npoll_interval_s = 0', "power.poll_interval_s"),
        ('ups = "ups"\nconfirm_s = -1', "power.confirm_s"),
        ('ups = "ups"\npower_off = "Run This"', "power.power_off"),
        ('ups = "ups"\nhost = "a b"', "power.host"),
        ('ups = "ups"\nlow_runtime = 100', "power.low_runtime"),
    ],
)
def test_bad_values_name_the_key(files: Path, table: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(write_config(files, VALID_CONFIG + f"\n[power]\n{table}\n"))
    assert err.value.key == key


@pytest.mark.parametrize(
    ("power", "words"),
    [
        ({"state": "unknown", "reason": "no UPS configured"}, "unknown (no UPS configured)"),
        ({"state": "mains", "charge_pct": 100, "runtime_s": 1800, "self_test": "passed",
          "ups": "ups@127.0.0.1:3493"},
         "on mains; charge 100 %, runtime 30 min, self-test passed, UPS ups@127.0.0.1:3493"),
        ({"state": "battery", "charge_pct": 80, "runtime_s": 1200,
          "outage_since": "2026-01-05T10:00:00+00:00"},
         "ON BATTERY (mains lost); charge 80 %, runtime 20 min, "
         "outage since 2026-01-05T10:00:00+00:00"),
        ({"state": "unreachable", "error": "cannot reach upsd"},
         "UPS NOT READABLE; cannot reach upsd"),
        ({"state": "mains", "previous_stop": {"reason": "power-cut-shutdown",
                                              "at": "2026-01-05T09:00:00+00:00"}},
         "on mains; last stop: power-cut shutdown at 2026-01-05T09:00:00+00:00"),
        (None, "unknown (this gateway does not report its power)"),
    ],
)
def test_status_says_the_power_state_in_plain_words(power: object, words: str) -> None:
    assert power_text(power) == words


@pytest.mark.parametrize(
    ("state", "problem"),
    [("battery", "ON BATTERY"), ("battery-low", "BATTERY LOW"), ("unreachable", "NOT READABLE")],
)
def test_a_power_problem_stands_out_on_a_terminal(state: str, problem: str) -> None:
    line = f"power        {power_text({'state': state})}"
    spans = [line[a:b] for a, b, kind in marks.text_spans(line) if kind == "problem"]
    assert spans == [problem]


def test_on_mains_nothing_stands_out() -> None:
    line = f"power        {power_text({'state': 'mains', 'charge_pct': 100})}"
    assert [k for _, _, k in marks.text_spans(line)] == ["label"]
