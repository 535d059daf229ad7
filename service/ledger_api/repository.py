"""The statements the ledger's routes read: entries, the ledger head, Merkle nodes, checkpoints and
witness cosignatures, and the card totals the reconciliation compares with the ledger's."""

from __future__ import annotations

from sqlalchemy import desc, func, insert, select

from service.db.models import Card, Checkpoint, LedgerEntry, LedgerHead, MerkleNode, WitnessCosignature

entries_t = LedgerEntry.__table__
head_t = LedgerHead.__table__
nodes_t = MerkleNode.__table__
cp_t = Checkpoint.__table__


def _visible(stmt, role: str, party_id: str | None):
    """Merchants and consumers read their own entries; everyone else reads all."""
    if role == "merchant":
        return stmt.where(entries_t.c.merchant_id == party_id)
    if role == "consumer":
        return stmt.where(entries_t.c.consumer_id == party_id)
    return stmt


async def entries_page(conn, role: str, party_id: str | None, after: int | None, limit: int) -> list:
    """Up to `limit` + 1 entries the party may read, after seq `after`, in seq order."""
    stmt = _visible(select(entries_t).order_by(entries_t.c.seq).limit(limit + 1), role, party_id)
    if after is not None:
        stmt = stmt.where(entries_t.c.seq > after)
    return (await conn.execute(stmt)).all()


async def entry(conn, seq: int, role: str, party_id: str | None):
    """Entry `seq` if the party may read it."""
    return (await conn.execute(_visible(select(entries_t).where(entries_t.c.seq == seq), role, party_id))).first()


async def hashed_entries(conn, after: int, limit: int) -> list:
    """Up to `limit` entries after seq `after`, in seq order: seq, kind, canonical JSON, leaf and chain hash."""
    e = entries_t.c
    stmt = select(e.seq, e.kind, e.canonical, e.leaf_hash, e.chain_hash).where(e.seq > after).order_by(e.seq)
    return (await conn.execute(stmt.limit(limit))).all()


async def canonical(conn, seq: int) -> str | None:
    return (await conn.execute(select(entries_t.c.canonical).where(entries_t.c.seq == seq))).scalar()


async def canonical_range(conn, lo: int, hi: int) -> list[str]:
    """The canonical JSON of entries lo ≤ seq < hi, in seq order."""
    e = entries_t.c
    stmt = select(e.canonical).where(e.seq >= lo, e.seq < hi).order_by(e.seq)
    return [r[0] for r in (await conn.execute(stmt)).all()]


async def ledger_size(conn) -> int:
    return int((await conn.execute(select(head_t.c.size).where(head_t.c.id == 1))).scalar() or 0)


async def ledger_head(conn):
    return (await conn.execute(select(head_t).where(head_t.c.id == 1))).first()


async def node_hashes(conn, level: int, lo: int, hi: int) -> list[bytes]:
    """The stored Merkle nodes at `level`, indexes lo ≤ idx < hi, in index order."""
    n = nodes_t.c
    stmt = select(n.hash).where(n.level == level, n.idx >= lo, n.idx < hi).order_by(n.idx)
    return [bytes(r[0]) for r in (await conn.execute(stmt)).all()]


async def card_totals(conn):
    """Sums over every card: price, escrow, held, released, refunded, and the number of cards."""
    c = Card.__table__.c
    sums = (func.coalesce(func.sum(col), 0) for col in (c.price, c.escrow, c.held, c.released, c.refunded))
    return (await conn.execute(select(*sums, func.count()))).first()


async def latest_witnessed_size(conn, seq: int, witnesses: list[str], quorum: int) -> int | None:
    """The largest checkpoint size holding entry `seq` that `quorum` of `witnesses` cosigned."""
    cosig_t = WitnessCosignature.__table__
    stmt = (
        select(cosig_t.c.tree_size)
        .where(cosig_t.c.tree_size > seq, cosig_t.c.witness.in_(witnesses))
        .group_by(cosig_t.c.tree_size)
        .having(func.count() >= quorum)
        .order_by(desc(cosig_t.c.tree_size))
        .limit(1)
    )
    size = (await conn.execute(stmt)).scalar()
    return int(size) if size is not None else None


async def checkpoint_row(conn, tree_size: int | None = None):
    """The checkpoint at `tree_size`, or the latest."""
    if tree_size is not None:
        return (await conn.execute(select(cp_t).where(cp_t.c.tree_size == tree_size))).first()
    return (await conn.execute(select(cp_t).order_by(desc(cp_t.c.tree_size)).limit(1))).first()


async def insert_checkpoint(conn, **values) -> None:
    await conn.execute(insert(cp_t).values(**values))


async def latest_checkpoint_size(conn, seq: int) -> int | None:
    """The largest checkpoint size holding entry `seq`."""
    stmt = select(cp_t.c.tree_size).where(cp_t.c.tree_size > seq).order_by(desc(cp_t.c.tree_size)).limit(1)
    size = (await conn.execute(stmt)).scalar()
    return int(size) if size is not None else None
