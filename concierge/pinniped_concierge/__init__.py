"""The concierge: trades a verified ID token for a short-lived, impersonation-only credential."""
