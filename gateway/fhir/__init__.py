"""HL7 FHIR R4 after the Personal Health Device IG: Observations and the Bundle (observation),
Device resources (device), shared vocabulary (vocab) and the MDC / UCUM code tables (codes).

Pure functions, no I/O. May import gateway.model, gateway.errors and gateway.seal only.
"""
