"""pdpctl: the agent-pdp command line (policy, bundle, serve, dev, decide)."""
