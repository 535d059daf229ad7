"""Webhooks (SPEC §9): endpoints, Standard Webhooks signatures, the SSRF guard and the dispatcher."""
