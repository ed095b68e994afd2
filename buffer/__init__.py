"""The durable outbox: sealed records on disk until the provider's broker acknowledged them.

May import gateway's shared modules and gateway.seal only.
"""

from buffer.outbox import ChainHead, NewRecord, Outbox, OutboxStats, StoredRecord

__all__ = ["ChainHead", "NewRecord", "Outbox", "OutboxStats", "StoredRecord"]
