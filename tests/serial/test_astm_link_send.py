"""ASTM E1381 link machine, sending side: resend, abort, contention, timers, and fuzzing."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.serial.astm_frames import encode_frame
from drivers.serial.astm_link import (
    AcceptPolicy,
    AstmLink,
    DuplicateFrame,
    FrameAccepted,
    FrameReceived,
    LinkProblem,
    LinkState,
    MessageComplete,
    MessageSent,
    ReceiverInterrupt,
    Role,
    TransferAborted,
)
from drivers.serial.events import SendBytes
from tests.serial.astm_link_helpers import (
    ACK,
    CRP_FRAMES,
    CRP_RECORDS,
    ENQ,
    EOT,
    LONG_RECORD,
    NAK,
    drain,
    sent,
)

# --- sending side --------------------------------------------------------------------------------


def sender(
    role: Role = Role.HOST, policy: AcceptPolicy = AcceptPolicy.HOLD_RECORDS
) -> tuple[AstmLink, int]:
    link = AstmLink(role, policy=policy)
    message_id = link.send_message(["Q|1|^S-0042||^^^ALL||||||||O"], now_s=0.0)
    assert sent(drain(link)) == ENQ
    return link, message_id


QUERY_FRAME = encode_frame(1, "Q|1|^S-0042||^^^ALL||||||||O\r", final=True)


def test_the_sender_sends_frames_after_ack_and_eot_at_the_end() -> None:
    link, message_id = sender()
    link.receive_data(ACK)
    assert sent(drain(link)) == QUERY_FRAME
    link.receive_data(ACK)
    assert drain(link) == [SendBytes(EOT), MessageSent(message_id)]
    assert link.state is LinkState.NEUTRAL


def test_the_sender_resends_a_frame_on_nak_and_on_any_other_reply() -> None:
    link, _ = sender()
    link.receive_data(ACK)
    drain(link)
    link.receive_data(NAK)
    assert sent(drain(link)) == QUERY_FRAME
    link.receive_data(b"?")
    assert sent(drain(link)) == QUERY_FRAME


def test_the_sender_aborts_after_six_failed_attempts() -> None:
    link, message_id = sender()
    link.receive_data(ACK)
    transmissions = sent(drain(link)).count(b"\x02")
    for _ in range(5):
        link.receive_data(NAK)
        transmissions += sent(drain(link)).count(b"\x02")
    link.receive_data(NAK)
    events = drain(link)
    assert transmissions == 6
    assert events == [SendBytes(EOT), TransferAborted("frame refused 6 times", message_id)]


def test_the_sender_gives_up_when_no_reply_comes_within_15_s() -> None:
    link, message_id = sender()
    link.receive_data(ACK, now_s=1.0)
    drain(link)
    link.tick(15.9)
    assert drain(link) == []
    link.tick(16.0)
    assert drain(link) == [
        SendBytes(EOT),
        TransferAborted("no reply within the reply timer", message_id),
    ]


def test_a_busy_receiver_gets_a_new_enq_after_10_s_and_six_busy_replies_abort() -> None:
    link, message_id = sender()
    now = 0.0
    for _ in range(5):
        link.receive_data(NAK, now_s=now)
        assert drain(link) == []
        link.tick(now + 9.9)
        assert drain(link) == []
        now += 10.0
        link.tick(now)
        assert sent(drain(link)) == ENQ
    link.receive_data(NAK)
    assert drain(link) == [TransferAborted("receiver busy after 6 ENQ attempts", message_id)]


def test_on_contention_the_host_yields_and_receives_the_instruments_message_first() -> None:
    link, message_id = sender(Role.HOST, AcceptPolicy.AUTO)
    link.receive_data(ENQ, now_s=0.5)  # contention: both sent ENQ
    assert drain(link) == []
    assert link.state is LinkState.CONTENTION_WAIT
    link.receive_data(ENQ, now_s=1.5)  # the instrument's ENQ after its 1 s wait
    assert sent(drain(link)) == ACK
    link.receive_data(CRP_FRAMES[0] + EOT, now_s=2.0)
    events = drain(link)
    assert isinstance(events[-2], MessageComplete)
    assert events[-1] == SendBytes(ENQ)  # now the host's own message goes out
    link.receive_data(ACK + ACK)
    assert drain(link)[-1] == MessageSent(message_id)


def test_the_host_tries_again_if_the_instrument_does_not_follow_up_a_contention() -> None:
    link, _ = sender(Role.HOST)
    link.receive_data(ENQ, now_s=0.5)
    link.tick(20.4)
    assert drain(link) == []
    link.tick(20.5)
    assert sent(drain(link)) == ENQ


def test_on_contention_the_instrument_keeps_priority_and_sends_enq_again_after_1_s() -> None:
    link, _ = sender(Role.INSTRUMENT)
    link.receive_data(ENQ, now_s=0.0)
    assert drain(link) == []
    link.tick(1.0)
    assert sent(drain(link)) == ENQ


def test_an_eot_reply_to_a_frame_counts_as_ack_and_is_reported_as_an_interrupt() -> None:
    link, message_id = sender()
    link.receive_data(ACK)
    drain(link)
    link.receive_data(EOT)
    assert drain(link) == [ReceiverInterrupt(message_id), SendBytes(EOT), MessageSent(message_id)]


def test_an_instrument_and_a_host_machine_exchange_a_message_end_to_end() -> None:
    instrument = AstmLink(Role.INSTRUMENT)
    host = AstmLink(Role.HOST, policy=AcceptPolicy.HOLD_RECORDS)
    message_id = instrument.send_message([*CRP_RECORDS, LONG_RECORD], now_s=0.0)
    records: list[str] = []
    done = False
    for _ in range(100):
        for event in drain(instrument):
            if isinstance(event, SendBytes):
                host.receive_data(event.data)
            done = done or event == MessageSent(message_id)
        for event in drain(host):
            if isinstance(event, SendBytes):
                instrument.receive_data(event.data)
            elif isinstance(event, FrameReceived):
                assert event.record is not None
                records.append(event.record)
                host.accept()  # here a driver would first wait for the durable commit
        if done:
            break
    assert done
    assert records == [r + "\r" for r in [*CRP_RECORDS, LONG_RECORD]]


# --- fuzzing -------------------------------------------------------------------------------------

KNOWN = (
    SendBytes,
    FrameReceived,
    FrameAccepted,
    DuplicateFrame,
    LinkProblem,
    MessageComplete,
    TransferAborted,
    MessageSent,
    ReceiverInterrupt,
)


@given(st.lists(st.binary(max_size=64), max_size=12), st.sampled_from(list(AcceptPolicy)))
def test_arbitrary_bytes_give_events_only_and_the_next_good_message_still_decodes(
    chunks: list[bytes], policy: AcceptPolicy
) -> None:
    link = AstmLink(policy=policy)
    now = 0.0
    for chunk in chunks:
        now += 1.0
        link.receive_data(chunk, now_s=now)
        for event in drain(link):
            assert isinstance(event, KNOWN)
            if isinstance(event, FrameReceived):
                link.accept()
    link.receive_data(EOT, now_s=now)
    link.tick(now + 31.0)
    drain(link)
    assert link.state is LinkState.NEUTRAL
    link.receive_data(ENQ)
    for frame in CRP_FRAMES[:2]:
        link.receive_data(frame)
        if any(isinstance(e, FrameReceived) for e in drain(link)):
            assert link.accept()
    link.receive_data(EOT)
    assert drain(link)[-1] == MessageComplete(CRP_RECORDS[0] + "\r" + CRP_RECORDS[1] + "\r")


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(st.sampled_from([ACK, NAK, ENQ, EOT, b"x", b""]), st.floats(0.0, 20.0)),
        max_size=40,
    )
)
def test_every_message_sent_ends_in_exactly_one_outcome_whatever_the_replies(
    replies: list[tuple[bytes, float]],
) -> None:
    link = AstmLink(Role.HOST)
    message_id = link.send_message(CRP_RECORDS, now_s=0.0)
    now = 0.0
    outcomes: list[MessageSent | TransferAborted] = []
    for reply, delay in replies:
        now += delay
        link.receive_data(reply, now_s=now)
        outcomes += [e for e in drain(link) if isinstance(e, MessageSent | TransferAborted)]
    for _ in range(40):  # let every timer run out
        now += 60.0
        link.tick(now)
        outcomes += [e for e in drain(link) if isinstance(e, MessageSent | TransferAborted)]
    ours = [e for e in outcomes if e.message_id == message_id]
    assert len(ours) == 1
    assert link.state is LinkState.NEUTRAL
