"""homecare-gateway, the router's package: the edge agent on a hospital-at-home router.

Here the vocabulary every layer shares (model, errors, gaps, alarms, progress, control, logs,
atomicfile) and the subpackages by role: seal, fhir, pipeline, config, uplink, power, daemon,
cli.
The shared modules import nothing else of ours; tests/test_layering.py holds the whole table.
"""

__version__ = "0.1.0"
