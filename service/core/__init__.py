"""Building blocks with no HTTP in them: settings, the clock, ids, money arithmetic, the credit-code check, file modes."""
