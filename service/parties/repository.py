"""Statements on the regulators, auditors and lenders tables (each holds id, name, created_at)."""

from __future__ import annotations

from sqlalchemy import insert


async def add(tx, table, party_id: str, name: str) -> None:
    await tx.conn.execute(insert(table).values(id=party_id, name=name, created_at=tx.now))
