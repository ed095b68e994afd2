"""What one ASTM sender can make the receiver hold is bounded, with a defined answer at each cap."""

from __future__ import annotations

from unittest import mock

from drivers.serial import astm_link
from drivers.serial.astm_frames import encode_frame, split_record
from drivers.serial.astm_link import LinkProblem, MessageComplete
from tests.serial.astm_link_helpers import ACK, EOT, NAK, drain, receiving, sent


def _frames(records: list[str]) -> list[bytes]:
    out, n = [], 1
    for record in records:
        for text, final in split_record(record + "\r"):
            out.append(encode_frame(n, text, final=final))
            n = (n + 1) % 8
    return out


def test_a_record_past_the_record_cap_is_nakked_frame_after_frame() -> None:
    link = receiving()
    with mock.patch.object(astm_link, "MAX_RECORD_CHARS", 500):
        replies = b""
        events = []
        for frame in _frames(["C|1|" + "x" * 2000]):
            link.receive_data(frame)
            got = drain(link)
            events += got
            replies += sent(got)
            if replies.endswith(NAK):
                break
    assert replies == ACK * 2 + NAK  # 480 characters taken, the frame that passes 500 refused
    assert any(
        isinstance(e, LinkProblem) and e.error.message == "record exceeds the size limit"
        for e in events
    )


def test_records_past_the_message_cap_are_nakked_and_the_earlier_ones_completed() -> None:
    link = receiving()
    with mock.patch.object(astm_link, "MAX_RECORDS_PER_MESSAGE", 3):
        replies = b""
        for frame in _frames([f"C|{i}|note" for i in range(1, 5)]):
            link.receive_data(frame)
            replies += sent(drain(link))
        link.receive_data(EOT)
        events = drain(link)
    assert replies == ACK * 3 + NAK
    (done,) = [e for e in events if isinstance(e, MessageComplete)]
    assert done.records == 3


def test_text_kept_for_the_end_of_a_message_is_capped_and_the_records_still_counted() -> None:
    link = receiving()
    with mock.patch.object(astm_link, "MAX_MESSAGE_CHARS", 100):
        for frame in _frames([f"C|{i}|" + "y" * 40 for i in range(1, 11)]):
            link.receive_data(frame)
            assert sent(drain(link)) == ACK
        link.receive_data(EOT)
        (done,) = [e for e in drain(link) if isinstance(e, MessageComplete)]
    assert done.records == 10
    assert done.truncated
    assert len(done.records_text) <= 100
