"""ASTM E1381 link machine, receiving side: ACK/NAK, accept(), duplicates, timers."""

from __future__ import annotations

from drivers.serial.astm_frames import encode_frame
from drivers.serial.astm_link import (
    AcceptPolicy,
    AstmLink,
    DuplicateFrame,
    Event,
    FrameAccepted,
    FrameReceived,
    LinkProblem,
    LinkState,
    MessageComplete,
    TransferAborted,
)
from drivers.serial.events import SendBytes
from tests.serial.astm_link_helpers import (
    ACK,
    CRP_FRAMES,
    CRP_RECORDS,
    ENQ,
    EOT,
    LONG_FRAMES,
    LONG_RECORD,
    NAK,
    drain,
    receiving,
    sent,
    state_of,
)

# --- receiving side ------------------------------------------------------------------------------


def test_enq_is_answered_with_ack_when_ready_and_nak_when_busy() -> None:
    link = AstmLink()
    link.set_ready(False)
    link.receive_data(ENQ)
    assert sent(drain(link)) == NAK
    assert state_of(link) is LinkState.NEUTRAL
    link.set_ready(True)
    link.receive_data(ENQ)
    assert sent(drain(link)) == ACK
    assert state_of(link) is LinkState.RECEIVING


def test_a_whole_crp_message_is_acked_frame_by_frame_and_completed_at_eot() -> None:
    link = receiving()
    events: list[Event] = []
    for frame in CRP_FRAMES:
        link.receive_data(frame)
        events += drain(link)
    link.receive_data(EOT)
    events += drain(link)
    assert sent(events) == ACK * 5
    assert [e.number for e in events if isinstance(e, FrameAccepted)] == [1, 2, 3, 4, 5]
    assert events[-1] == MessageComplete("".join(r + "\r" for r in CRP_RECORDS))
    assert link.state is LinkState.NEUTRAL


def test_the_last_frame_of_a_record_is_acked_only_after_accept() -> None:
    link = receiving(AcceptPolicy.HOLD_RECORDS)
    link.receive_data(CRP_FRAMES[0])
    events = drain(link)
    assert events == [FrameReceived(1, CRP_RECORDS[0] + "\r", True, CRP_RECORDS[0] + "\r")]
    assert link.state is LinkState.AWAITING_DECISION
    link.tick(100.0)  # waiting for the outbox commit never times out on our side
    assert drain(link) == []
    assert link.accept()
    events = drain(link)
    assert sent(events) == ACK
    assert events[-1] == FrameAccepted(1, CRP_RECORDS[0] + "\r", True, CRP_RECORDS[0] + "\r")


def test_etb_continuation_frames_are_acked_at_once_and_joined_into_the_record() -> None:
    link = receiving(AcceptPolicy.HOLD_RECORDS)
    link.receive_data(LONG_FRAMES[0] + LONG_FRAMES[1])
    events = drain(link)
    assert sent(events) == ACK * 2
    link.receive_data(LONG_FRAMES[2])
    (held,) = drain(link)
    assert isinstance(held, FrameReceived)
    assert held.final
    assert held.record == LONG_RECORD + "\r"
    assert [len(f) for f in LONG_FRAMES] == [247, 247, 48]


def test_reject_sends_nak_and_the_resent_frame_is_offered_again() -> None:
    link = receiving(AcceptPolicy.HOLD_RECORDS)
    link.receive_data(CRP_FRAMES[0])
    drain(link)
    assert link.reject()
    assert sent(drain(link)) == NAK
    link.receive_data(CRP_FRAMES[0])
    assert isinstance(drain(link)[0], FrameReceived)


def test_a_bad_checksum_is_naked_and_the_next_good_frame_accepted() -> None:
    link = receiving()
    bad = CRP_FRAMES[0][:-4] + b"00\r\n"
    link.receive_data(bad)
    events = drain(link)
    assert sent(events) == NAK
    assert isinstance(events[0], LinkProblem)
    assert "checksum" in events[0].error.message
    link.receive_data(CRP_FRAMES[0])
    assert sent(drain(link)) == ACK


def test_a_wrong_frame_number_is_naked() -> None:
    link = receiving()
    link.receive_data(encode_frame(3, "P|1\r", final=True))
    events = drain(link)
    assert sent(events) == NAK
    assert isinstance(events[0], LinkProblem)
    assert events[0].error.fields == {"received": 3, "expected": 1}


def test_a_repeated_previous_frame_is_acked_and_ignored_as_a_duplicate() -> None:
    link = receiving()
    link.receive_data(CRP_FRAMES[0])
    drain(link)
    link.receive_data(CRP_FRAMES[0])  # our ACK was lost: the sender repeats frame 1
    events = drain(link)
    assert events == [SendBytes(ACK), DuplicateFrame(1)]
    link.receive_data(CRP_FRAMES[1] + EOT)
    events = drain(link)
    assert events[-1] == MessageComplete(CRP_RECORDS[0] + "\r" + CRP_RECORDS[1] + "\r")


def test_the_receiver_timer_aborts_to_neutral_after_30_s_without_a_frame() -> None:
    link = receiving()
    link.tick(29.9)
    assert drain(link) == []
    link.tick(30.0)
    assert drain(link) == [TransferAborted("no frame or EOT within the receive timer")]
    assert link.state is LinkState.NEUTRAL
    link.receive_data(CRP_FRAMES[0])  # frames in neutral are not ours to acknowledge
    assert drain(link) == []


def test_the_receiver_timer_restarts_with_every_reply() -> None:
    link = receiving()
    link.receive_data(CRP_FRAMES[0], now_s=20.0)
    drain(link)
    link.tick(45.0)
    assert drain(link) == []
    link.tick(50.0)
    assert isinstance(drain(link)[0], TransferAborted)


def test_eot_while_a_frame_awaits_acceptance_aborts_and_a_late_accept_is_refused() -> None:
    link = receiving(AcceptPolicy.HOLD_RECORDS)
    link.receive_data(CRP_FRAMES[0] + EOT)
    events = drain(link)
    assert isinstance(events[-1], TransferAborted)
    assert not link.accept()
    assert sent(drain(link)) == b""


def test_eot_inside_a_record_discards_the_partial_record() -> None:
    link = receiving()
    link.receive_data(CRP_FRAMES[0])
    link.receive_data(encode_frame(2, "C|1|I|abc", final=False) + EOT)
    events = drain(link)
    problems = [e for e in events if isinstance(e, LinkProblem)]
    assert problems[0].error.message == "transfer ended inside a record"
    assert events[-1] == MessageComplete(CRP_RECORDS[0] + "\r")
