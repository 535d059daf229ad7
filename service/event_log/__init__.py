"""Events (SPEC §9): every state change, written in the change's own transaction, and their feed."""
