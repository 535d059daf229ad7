"""Custody (资金托管): settlement batches, the bank's results and bank statements (SPEC §12)."""
