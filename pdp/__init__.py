"""agent-pdp: an OPA-backed policy decision point for AI gateways."""

__version__ = "0.1.0"
