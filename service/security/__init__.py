"""Who may call: bearer keys and their revocation, service secrets, idempotency of retried writes."""
