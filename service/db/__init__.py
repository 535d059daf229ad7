"""Database: tables, engines, and the batching writer."""
