"""The prepaid-consumption escrow service (预付保): FastAPI app composing `ledger/` and `risk/`."""
