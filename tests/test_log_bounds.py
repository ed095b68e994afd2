"""Log events are bounded and escaped: device text can neither grow the daemon's memory nor put
an escape sequence on a technician's terminal."""

from __future__ import annotations

import json

import structlog

from gateway import logs
from gateway.cli import journal
from gateway.logs import MAX_EVENT_CHARS, MAX_FIELD_CHARS, RecentEvents, safe_text

ESC_TITLE = "\x1b]0;pwned\x07\x1b[2J\x1b[31m"  # set the window title, clear, red


def _logger(recent: RecentEvents) -> structlog.typing.FilteringBoundLogger:
    return structlog.wrap_logger(  # type: ignore[no-any-return]
        structlog.ReturnLogger(), processors=logs.processors(json=True, recent=recent)
    )


def test_control_characters_are_escaped_and_text_is_cut() -> None:
    assert safe_text("a\x1b[31mb\x9bc\x7f") == "a\\x1b[31mb\\x9bc\\x7f"
    cut = safe_text("z" * 10_000)
    assert cut.startswith("z" * MAX_FIELD_CHARS)
    assert cut.endswith(f"...[+{10_000 - MAX_FIELD_CHARS} chars]")


def test_an_event_with_megabytes_of_device_text_is_kept_small_and_escaped() -> None:
    recent = RecentEvents(capacity=5)
    log = _logger(recent)
    rendered = log.error(
        "serial.astm.record_unusable",
        test=ESC_TITLE + "T" * 1_000_000,
        unit="mg/L\x00",
        **{f"f{i}": "u" * 500 for i in range(100)},
        raw=b"\x1b" * 100,
    )
    (event,) = recent.last(1)
    assert len(json.dumps(event)) < MAX_EVENT_CHARS * 2
    assert event["fields_dropped"] > 0
    assert event["event"] == "serial.astm.record_unusable"
    assert event["raw"] == "[100 bytes]"
    for text in (json.dumps(event), str(rendered)):
        assert "\x1b" not in text
        assert "\x07" not in text
        assert "\x00" not in text


def test_the_ring_holds_at_most_capacity_times_the_event_cap() -> None:
    recent = RecentEvents(capacity=50)
    log = _logger(recent)
    for _ in range(200):
        log.warning("ble.malformed_payload", reason="r" * 100_000)
    kept = recent.last(1000)
    assert len(kept) == 50
    assert sum(len(json.dumps(e)) for e in kept) < 50 * MAX_EVENT_CHARS


def test_gatewayctl_logs_escapes_a_journal_line_from_elsewhere() -> None:
    """An older daemon's (or a foreign) JSON line with raw ESC bytes: the CLI escapes it too."""
    line = json.dumps({"event": "x", "level": "info", "note": ESC_TITLE + "n" * 5000})
    event = journal.redact_line(line)
    for text in (journal.render(event), " ".join(journal.columns(event))):
        assert "\x1b" not in text
        assert "\x07" not in text
        assert len(text) < 1000
