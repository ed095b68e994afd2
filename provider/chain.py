"""Provider-side completeness proof: sequence numbers and the hash chain of each gateway.

The provider does not trust the gateway's word that nothing was lost: every record carries its
sequence number and the hash of the record before it. ``ChainTracker`` keeps, per gateway and
epoch, which sequence numbers arrived and checks every link it can see. ``missing()`` lists the
sequence numbers below the highest received that never arrived; ``breaks`` lists links whose
hashes disagree (a record altered, dropped and replaced, or a forked history).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.seal import wire


@dataclass(frozen=True, slots=True)
class ChainBreak:
    gateway_id: str
    epoch: int
    seq: int  # the record whose prev_hash does not match its predecessor's hash
    detail: str


@dataclass(slots=True)
class _Chain:
    hashes: dict[int, bytes] = field(default_factory=dict)  # seq -> record hash
    prevs: dict[int, bytes] = field(default_factory=dict)  # seq -> prev_hash it claims
    max_seq: int = 0


class ChainTracker:
    """Tracks arrivals per (gateway, epoch). Duplicates (same seq, same hash) are expected."""

    def __init__(self) -> None:
        self._chains: dict[tuple[str, int], _Chain] = {}
        self.breaks: list[ChainBreak] = []
        self.duplicates = 0

    def add(self, header: wire.RecordHeader, record_hash: bytes) -> bool:
        """Record one verified arrival; return False if it was a duplicate."""
        key = (header.gateway_id, header.epoch)
        chain = self._chains.setdefault(key, _Chain())
        seq = header.seq
        known = chain.hashes.get(seq)
        if known is not None:
            if known != record_hash:
                self._break(header, seq, "two different records carry this sequence number")
            self.duplicates += 1
            return False
        chain.hashes[seq] = record_hash
        chain.prevs[seq] = header.prev_hash
        chain.max_seq = max(chain.max_seq, seq)
        if seq == 1 and header.prev_hash != wire.GENESIS_HASH:
            self._break(header, seq, "the first record of an epoch must link to the zero hash")
        before = chain.hashes.get(seq - 1)
        if before is not None and before != header.prev_hash:
            self._break(header, seq, "prev_hash does not match the hash of the record before")
        after_prev = chain.prevs.get(seq + 1)
        if after_prev is not None and after_prev != record_hash:
            self._break(header, seq + 1, "the next record does not link to this one")
        return True

    def _break(self, header: wire.RecordHeader, seq: int, detail: str) -> None:
        self.breaks.append(ChainBreak(header.gateway_id, header.epoch, seq, detail))

    def missing(self, gateway_id: str, epoch: int, upto: int | None = None) -> list[int]:
        """Sequence numbers 1..max (or 1..upto) that have not arrived for that gateway/epoch."""
        chain = self._chains.get((gateway_id, epoch))
        top = upto if upto is not None else (chain.max_seq if chain else 0)
        have = chain.hashes if chain else {}
        return [s for s in range(1, top + 1) if s not in have]

    def received(self, gateway_id: str, epoch: int) -> int:
        chain = self._chains.get((gateway_id, epoch))
        return len(chain.hashes) if chain else 0

    def streams(self) -> list[tuple[str, int]]:
        return sorted(self._chains)

    def all_missing(self) -> dict[tuple[str, int], list[int]]:
        return {k: self.missing(*k) for k in self.streams() if self.missing(*k)}
