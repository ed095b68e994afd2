"""Device side: one protocol per module, pure decoders kept apart from I/O."""
