"""The durable outbox: sealed records on disk until the provider's broker acknowledged them."""

from buffer.outbox import ChainHead, NewRecord, Outbox, OutboxStats, StoredRecord

__all__ = ["ChainHead", "NewRecord", "Outbox", "OutboxStats", "StoredRecord"]
