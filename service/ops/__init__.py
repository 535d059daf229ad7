"""Operating the service: migrations, backups, the sweeper, the demo data, the ledger and witness commands."""
