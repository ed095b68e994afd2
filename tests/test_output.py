"""gatewayctl output: rich tables on a terminal, the plain text unchanged everywhere else."""

from __future__ import annotations

import io
import re
from contextlib import redirect_stdout
from typing import Any

import pytest
import structlog

from gateway import logs
from gateway.cli import marks, output, tables
from gateway.cli.main import devices_grid, devices_table, render_status
from gateway.cli.output_rich import RichProgress, RichScreen, console_for

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
BOLD_RED = "\x1b[1;31m"

DEVICES: list[dict[str, Any]] = [
    {
        "device": "btmac:C0:FF:EE:00:00:31",
        "driver": "ble-thermometer",
        "state": "pairing-failed",
        "last_seen": None,
        "battery_pct": None,
        "rssi_dbm": -61,
        "silent": True,
    },
    {
        "device": "serial:AS0012345",
        "driver": "astm",
        "state": "streaming",
        "last_seen": None,
        "battery_pct": 87,
        "rssi_dbm": None,
        "silent": False,
    },
]
STATUS: dict[str, Any] = {
    "software_version": "0.1.0",
    "gateway_id": "gw-0001",
    "episode": "ep-7",
    "uptime_s": 3600.0,
    "uplink": {"state": "connected", "delivered_records": 12, "last_error": None},
    "outbox": {
        "depth": 3,
        "bytes": 2048,
        "oldest_age_s": 4.0,
        "last_seq": 15,
        "epoch": 1,
        "quota_bytes": None,
    },
    "ingest": {"committed_readings": 15, "last_error": None},
    "clock": {"source": "ntp", "synchronised": False},
    "certificate": {"not_after": "2027-01-01", "days_left": 39},
    "devices": DEVICES,
    "links": {},
    "alarms": ["device-silent"],
}


class FakeTerminal(io.StringIO):
    """A stream that says it is a terminal (what a technician's ssh session is)."""

    def isatty(self) -> bool:
        return True


def rich_screen(
    width: int = 100, env: dict[str, str] | None = None
) -> tuple[RichScreen, io.StringIO]:
    buf = FakeTerminal()
    console = console_for(buf, env or {})
    console.width = width
    return RichScreen(console), buf


def plain(text: str) -> str:
    return ANSI.sub("", text)


def test_plain_status_is_render_status_verbatim(capsys: pytest.CaptureFixture[str]) -> None:
    """A pipe gets exactly the text render_status makes: the stable columns tests and tickets
    rely on (the devices block included)."""
    output.PlainScreen().text(
        render_status(STATUS), embedded=[devices_grid(DEVICES)], heading=True
    )
    out = capsys.readouterr().out
    assert out == render_status(STATUS) + "\n"
    assert "uplink       connected" in out
    assert "  DEVICE                   DRIVER" in out
    assert "\x1b" not in out


def test_plain_devices_table_keeps_its_columns() -> None:
    assert devices_table(DEVICES).splitlines() == [
        "DEVICE                   DRIVER           STATE           LAST SEEN  BATTERY  "
        "RSSI DBM  ALIVE",
        "btmac:C0:FF:EE:00:00:31  ble-thermometer  pairing-failed  never      -        "
        "-61       SILENT",
        "serial:AS0012345         astm             streaming       never      87%      "
        "-         ok",
    ]


def test_plain_checks_are_verdict_lines_without_a_header(
    capsys: pytest.CaptureFixture[str],
) -> None:
    output.PlainScreen().checks(
        [("PASS", "signing key", "an Ed25519 key"), ("FAIL", "clock", "NOT synchronised")]
    )
    assert capsys.readouterr().out == (
        "PASS  signing key  an Ed25519 key\nFAIL  clock        NOT synchronised\n"
    )


def test_terminal_status_draws_the_devices_as_a_table_and_marks_problems() -> None:
    screen, buf = rich_screen()
    screen.text(render_status(STATUS), embedded=[devices_grid(DEVICES)], heading=True)
    drawn = buf.getvalue()
    text = plain(drawn)
    assert "uplink       connected, 12 records delivered" in text  # the summary lines as-is
    assert "clock        ntp, NOT synchronised" in text
    assert "─" * 10 in text  # the devices block became a drawn table
    assert re.search(r"^  DEVICE +DRIVER +STATE", text, re.MULTILINE)
    assert "btmac:C0:FF:EE:00:00:31" in text
    assert f"{BOLD_RED}NOT synchronised" in drawn
    assert f"{BOLD_RED}pairing-failed" in drawn
    assert f"{BOLD_RED}SILENT" in drawn
    assert f"{BOLD_RED}device-silent" in drawn  # the alarms
    assert f"{BOLD_RED}streaming" not in drawn


def test_terminal_status_without_a_findable_devices_block_is_still_shown_whole() -> None:
    """If render_status changes shape (another section, another indent), nothing is lost:
    the text is printed as it is, only without the drawn table."""
    screen, buf = rich_screen()
    other = tables.Table.of(["x"], [["not in the text"]])
    screen.text(render_status(STATUS), embedded=[other], heading=True)
    assert plain(buf.getvalue()).rstrip("\n").splitlines() == render_status(STATUS).splitlines()


def test_terminal_checks_table_has_a_header_and_a_red_fail() -> None:
    screen, buf = rich_screen()
    screen.checks([("PASS", "route", "via wg0"), ("FAIL", "broker", "connection refused")])
    drawn = buf.getvalue()
    assert re.search(r"RESULT +CHECK +DETAIL", plain(drawn))
    assert f"{BOLD_RED}FAIL" in drawn
    assert "\x1b[32mPASS" in drawn


def test_terminal_output_takes_text_literally_not_as_rich_markup() -> None:
    """A redacted log field reads [redacted]: rich markup would swallow it as a style tag."""
    screen, buf = rich_screen()
    screen.table(tables.Table.of(["fields"], [["value=[redacted] key=[bold]x[/bold]"]]))
    screen.key_values([("note", "[redacted]")])
    text = plain(buf.getvalue())
    assert "value=[redacted] key=[bold]x[/bold]" in text
    assert "note  [redacted]" in text


def test_no_color_keeps_the_table_and_the_bold_but_drops_colours() -> None:
    screen, buf = rich_screen(env={"NO_COLOR": "1"})
    screen.table(devices_grid(DEVICES))
    drawn = buf.getvalue()
    assert "─" in drawn
    assert "SILENT" in drawn
    colours = [code for code in ANSI.findall(drawn) if re.search(r"\[(?:.*;)?3\d", code)]
    assert colours == []
    assert "\x1b[1m" in drawn  # problem cells stay bold


def test_screen_is_rich_only_on_a_terminal_that_is_not_dumb() -> None:
    assert isinstance(output.screen(io.StringIO(), env={}), output.PlainScreen)
    assert isinstance(output.screen(FakeTerminal(), env={"TERM": "dumb"}), output.PlainScreen)
    assert isinstance(output.screen(FakeTerminal(), env={"TERM": "xterm"}), RichScreen)
    assert isinstance(output.screen(FakeTerminal(), env={"NO_COLOR": "1"}), RichScreen)


def test_progress_is_silent_with_json_and_plain_lines_off_a_terminal() -> None:
    for stream, env, as_json, kind in [
        (FakeTerminal(), {}, True, "NoProgress"),
        (io.StringIO(), {}, False, "LineProgress"),
        (FakeTerminal(), {"TERM": "dumb"}, False, "LineProgress"),
        (FakeTerminal(), {}, False, "RichProgress"),
    ]:
        with output.progress(as_json, stream, env) as progress:
            assert type(progress).__name__ == kind
            task = progress.begin("delivering", total=2, unit="records")
            progress.update(task, 2)
            progress.end(task)
        if as_json:
            assert stream.getvalue() == ""


def test_rich_progress_draws_on_its_stream_and_clears_when_done() -> None:
    buf = FakeTerminal()
    console = console_for(buf, {})
    console.width = 80
    with RichProgress(console) as live:
        task = live.begin("delivering to the provider: 2 records left", total=4, unit="records")
        live.update(task, 2)
        live.end(task, "all delivered")
        spinner = live.begin("waiting for a measurement")  # no total: pulses, then fills
        live.end(spinner)
    drawn = buf.getvalue()
    assert "delivering to the provider" in drawn
    assert "\x1b[?25l" in drawn  # cursor hidden while drawing, shown again after
    assert "\x1b[?25h" in drawn


def test_text_spans_find_labels_and_problem_words() -> None:
    text = "uplink       backoff; last error: refused\nclock        ntp, NOT synchronised"
    spans = [(text[a:b], kind) for a, b, kind in marks.text_spans(text)]
    assert spans == [
        ("uplink", "label"),
        ("last error: refused", "problem"),
        ("clock", "label"),
        ("NOT synchronised", "problem"),
    ]
    assert marks.text_spans("alarms       none") == [(0, 6, "label")]


@pytest.mark.parametrize(
    ("cell", "kind"),
    [
        ("FAIL", "problem"),
        ("SILENT", "problem"),
        ("pairing-failed", "problem"),
        ("NOT registered", "problem"),
        ("MISSING", "problem"),
        ("PASS", "good"),
        ("SKIP", "muted"),
        ("out-of-range", None),  # a BLE health device between measurements: normal
        ("btmac:C0:FF:EE:00:00:31", None),
    ],
)
def test_cells_are_marked_by_what_they_mean(cell: str, kind: str | None) -> None:
    assert marks.mark(cell) == kind


def test_plain_screen_writes_to_the_current_stdout() -> None:
    """Looked up at each call: a redirect (capsys, contextlib) after construction still works."""
    screen = output.PlainScreen()
    buf = io.StringIO()
    with redirect_stdout(buf):
        screen.key_values([("state", "bound"), ("episode", None)])
    assert buf.getvalue() == "state    bound\nepisode  -\n"


def test_daemon_console_tracebacks_never_show_local_variables(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With rich installed structlog's console default is a rich traceback, which prints every
    frame's locals: the daemon's console logs keep plain tracebacks (no reading in a local
    leaks)."""

    def decode() -> None:
        reading_c = "38.9"  # noqa: F841 - the local a rich traceback would print
        raise ValueError("decoder failed")

    logs.configure(json=False)
    try:
        try:
            decode()
        except ValueError:
            structlog.get_logger("test").exception("ble.decode_failed")
    finally:
        structlog.reset_defaults()
    err = capsys.readouterr().err
    assert "ble.decode_failed" in err
    assert "ValueError: decoder failed" in err
    assert "38.9" not in err
