"""pytest fixtures for the local concierge (placeholder until written)."""
