"""The transport-agnostic data plane: what every protocol layer calls."""
