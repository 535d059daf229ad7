"""Credit recommendation (信用推介): lenders, merchants' consent, and the reports lenders read (SPEC §12)."""
