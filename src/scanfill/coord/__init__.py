"""Coordination: the schema, discovery, slices and leases, and the store that owns their tables."""
