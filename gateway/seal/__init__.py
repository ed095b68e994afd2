"""Sealing: the wire format (wire), seal/open/verify with the identity key and HPKE (sealing),
canonical JSON (cjson) and key loading (keys). Pure and synchronous.

May import gateway.errors and gateway.model only; the pipeline and the provider's verifier use it.
"""
