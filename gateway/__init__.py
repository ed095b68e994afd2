"""homecare-gateway: the edge agent on a hospital-at-home router."""

__version__ = "0.1.0"
