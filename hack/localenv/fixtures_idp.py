"""pytest fixtures for the local idp (placeholder until written)."""
