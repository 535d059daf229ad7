"""API keys of merchants, regulators and auditors: rotation and revocation (SPEC §8)."""
