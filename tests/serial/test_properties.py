"""Property tests of every serial framer and protocol state machine, not only of the decoders:
whatever bytes arrive, in whatever chunks, with whatever decisions and timer ticks between them,
the cores answer with values and typed errors, keep their buffers under their caps, and never
raise anything else (a device must not be able to throw an exception into a driver).
"""

from __future__ import annotations

import contextlib
import itertools
import string
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.serial import astm_link, modem_at
from drivers.serial.astm_driver import AstmDriver, AstmDriverConfig, _MessageContext
from drivers.serial.astm_events import MessageComplete
from drivers.serial.astm_frames import (
    ACK,
    ENQ,
    EOT,
    MAX_TEXT,
    NAK,
    STX,
    Frame,
    encode_frame,
    parse_frame,
    scan_frames,
)
from drivers.serial.astm_link import AcceptPolicy, AstmLink, LinkState, Role
from drivers.serial.astm_records import DEFAULT_DELIMITERS, parse_record
from drivers.serial.cms50 import Cms50Decoder, Cms50Framer, Cms50Packet
from drivers.serial.errors import (
    AstmLinkError,
    AstmRecordError,
    Cms50FrameError,
    NoninFrameError,
)
from drivers.serial.events import NeedData, SendBytes
from drivers.serial.modem_at import AtCommand, AtSession
from drivers.serial.nonin import NoninDecoder, NoninFramer, encode_packet
from drivers.serial.port import PortSpec

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Bytes that matter to the framers, over-weighted so that random input hits their branches.
SPECIAL = st.sampled_from([STX, 0x03, 0x17, 0x0D, 0x0A, ENQ, ACK, NAK, EOT, 0x80, 0x01])
NOISY = st.lists(st.one_of(SPECIAL, st.integers(0, 255)), max_size=600).map(bytes)


def _chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


# --- ASTM frames --------------------------------------------------------------------------------


@given(st.integers(0, 7), st.text(string.printable.replace("\r", ""), max_size=MAX_TEXT),
       st.booleans())
def test_an_astm_frame_round_trips(number: int, text: str, final: bool) -> None:
    text = "".join(c for c in text if c not in "\n\x0b\x0c")
    assert parse_frame(encode_frame(number, text, final=final)) == Frame(number, text, final)


@FAST
@given(NOISY)
def test_scanning_noise_yields_frames_of_at_most_240_characters_or_typed_errors(
    data: bytes,
) -> None:
    for item in scan_frames(data):
        assert isinstance(item, Frame | AstmLinkError)
        if isinstance(item, Frame):
            assert len(item.text) <= MAX_TEXT


@FAST
@given(st.text(max_size=400))
def test_any_record_text_parses_or_is_a_typed_record_error(text: str) -> None:
    with contextlib.suppress(AstmRecordError):
        parse_record(text, DEFAULT_DELIMITERS)


# --- ASTM link state machine --------------------------------------------------------------------

LINK_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("data"), NOISY),
        st.tuples(st.just("frame"), st.tuples(st.integers(0, 7), st.text(
            string.ascii_letters + "|^\\&", max_size=60), st.booleans())),
        st.tuples(st.just("tick"), st.floats(0.0, 40.0)),
        st.tuples(st.just("accept"), st.none()),
        st.tuples(st.just("reject"), st.none()),
        st.tuples(st.just("send"), st.lists(st.text(string.ascii_letters + "|", min_size=1,
                                                     max_size=30), min_size=1, max_size=3)),
    ),
    max_size=40,
)


@FAST
@given(st.sampled_from(list(AcceptPolicy)), st.sampled_from(list(Role)), LINK_OPS)
def test_the_astm_link_survives_any_sequence_of_bytes_decisions_and_ticks(
    policy: AcceptPolicy, role: Role, ops: list[tuple[str, object]]
) -> None:
    link = AstmLink(role, policy=policy)
    now = 0.0
    link.receive_data(bytes([ENQ]), now)
    for op, arg in ops:
        if op == "data":
            assert isinstance(arg, bytes)
            link.receive_data(arg, now)
        elif op == "frame":
            assert isinstance(arg, tuple)
            number, text, final = arg
            link.receive_data(encode_frame(int(number), str(text), final=bool(final)), now)
        elif op == "tick":
            now += float(arg)  # type: ignore[arg-type]
            link.tick(now)
        elif op == "accept":
            link.accept(now)
        elif op == "reject":
            link.reject(now)
        else:
            link.send_message(arg, now)  # type: ignore[arg-type]
        events = 0
        while not isinstance(event := link.next_event(), NeedData):
            events += 1
            if isinstance(event, SendBytes):
                assert event.data[0] in (ACK, NAK, EOT, ENQ, STX), event
            if isinstance(event, MessageComplete):
                assert len(event.records_text) <= astm_link.MAX_MESSAGE_CHARS
                assert event.records >= 1
        assert events < 10_000
        assert isinstance(link.state, LinkState)
    # However it was left, a silent line ends a transfer by the timers (no receiving trap).
    for _ in range(10):
        now += 60.0
        link.tick(now)
        if link.state is LinkState.AWAITING_DECISION:
            link.reject(now)
        while not isinstance(link.next_event(), NeedData):
            pass
    assert link.state not in (LinkState.RECEIVING, LinkState.AWAITING_DECISION)


# --- the ASTM driver's record border ------------------------------------------------------------

HEADERS = st.one_of(
    st.just("H|\\^&|||Afinion 2^1.10^AS0012345"),
    st.text(max_size=300).map(lambda t: "H|\\^&|||" + t),
    st.text(max_size=50),
)
RECORDS = st.one_of(
    st.just("R|1|^^^CRP|5.0|mg/L||N||F||||20240301101500"),
    st.text(max_size=300).map(lambda t: "R|1|" + t),
    st.sampled_from(["L|1|N", "O|1|S-1||^^^CRP", "P|1", "C|1|I|x|G", "Q|1"]),
    st.text(max_size=80),
)


@FAST
@given(st.lists(st.one_of(HEADERS, RECORDS), max_size=8))
def test_any_records_in_any_order_become_measurements_or_unusable_records(
    records: list[str],
) -> None:
    """The border of the ASTM driver (drivers/serial/astm_driver.py): never an exception."""
    driver = AstmDriver(
        AstmDriverConfig("p", PortSpec("/dev/null")),
        wallclock=lambda: datetime(2026, 1, 1, tzinfo=UTC),
    )
    context = _MessageContext()
    for text in records:
        out = driver._record(text + "\r", context)
        assert all(m.source == "serial.astm" for m in out)
    assert driver.rejected_input >= 0


# --- oximeter framers ---------------------------------------------------------------------------


@FAST
@given(NOISY, st.lists(st.integers(0, 10_000), max_size=6))
def test_the_nonin_framer_finds_the_same_frames_however_the_bytes_are_chunked(
    data: bytes, cuts: list[int]
) -> None:
    whole = [f for f in NoninFramer().feed(data) if not isinstance(f, NoninFrameError)]
    framer = NoninFramer()
    parts = [f for c in _chunked(data, cuts) for f in framer.feed(c)]
    assert [f for f in parts if not isinstance(f, NoninFrameError)] == whole


@FAST
@given(NOISY, st.integers(0, 100), st.integers(0, 300))
def test_the_nonin_decoder_recovers_a_packet_after_any_noise(
    noise: bytes, spo2: int, pulse: int
) -> None:
    decoder = NoninDecoder()
    for item in decoder.feed(noise, 0.0):
        assert isinstance(item, NoninFrameError) or item.raw
    packet = encode_packet(spo2, pulse)
    samples = [s for s in decoder.feed(packet * 3, 1.0) if not isinstance(s, NoninFrameError)]
    assert samples, "a clean packet after noise is found again"
    assert samples[-1].spo2_pct == spo2
    assert samples[-1].pulse_bpm == pulse


@FAST
@given(NOISY, st.lists(st.integers(0, 10_000), max_size=6))
def test_the_cms50_framer_is_chunk_invariant_and_never_raises(
    data: bytes, cuts: list[int]
) -> None:
    whole = [p for p in Cms50Framer().feed(data) if isinstance(p, Cms50Packet)]
    framer = Cms50Framer()
    parts = [p for c in _chunked(data, cuts) for p in framer.feed(c)]
    assert [p for p in parts if isinstance(p, Cms50Packet)] == whole
    decoder = Cms50Decoder()
    for item in decoder.feed(data, 0.0):
        assert isinstance(item, Cms50FrameError) or 0 <= (item.spo2_pct or 0) <= 100


# --- modem AT session ---------------------------------------------------------------------------

AT_LINES = st.one_of(
    st.sampled_from([b"OK\r\n", b"ERROR\r\n", b"+CME ERROR: 10\r\n", b"+CSQ: 20,99\r\n",
                     b"+CREG: 0,1\r\n", b"AT+CSQ\r\n", b"\r\n", b"RING\r\n"]),
    NOISY,
    st.binary(min_size=1, max_size=3000),  # past the line cap, without CR/LF
)


@FAST
@given(st.lists(st.one_of(st.tuples(st.just("rx"), AT_LINES),
                          st.tuples(st.just("tick"), st.floats(0.0, 10.0)),
                          st.tuples(st.just("cmd"), st.sampled_from(["AT+CSQ", "AT+CREG?"]))),
                max_size=40))
def test_the_at_session_survives_anything_and_keeps_its_buffers_capped(
    ops: list[tuple[str, object]],
) -> None:
    session = AtSession()
    now = 0.0
    for op, arg in ops:
        if op == "rx":
            session.receive_data(arg, now)  # type: ignore[arg-type]
        elif op == "tick":
            now += float(arg)  # type: ignore[arg-type]
            session.tick(now)
        else:
            session.submit(AtCommand(str(arg), prefix=str(arg)[2:].rstrip("?")), now)
        while not isinstance(session.next_event(), NeedData):
            pass
        assert len(session._buf) < modem_at._MAX_LINE
        assert len(session._lines) <= modem_at.MAX_RESPONSE_LINES
