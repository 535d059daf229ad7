"""Every statement on the ledger's tables: entries, the ledger head, Merkle nodes, checkpoints, witness state
and cosignatures, and the card balances the reconciliation compares with the ledger's sums.

Three kinds of connection read them:
- an async SQLAlchemy connection (the routes, the checkpointer, the witnessing task);
- `read_for_proof`'s synchronous engine, reading through the driver (`Raw`) on a worker thread;
- a bare DB-API cursor (sqlite3 or psycopg) holding the whole-ledger walk's snapshot, and the backup's. The
  walk's second process (`verify_worker`) imports no SQLAlchemy, so the statements it runs are made here by
  the process that starts it and handed over with its task (`walk_entries`, `chain_hash_at`).
"""

from __future__ import annotations

from collections import namedtuple
from functools import lru_cache

from sqlalchemy import desc, func, insert, select, text, update

from service.db.models import (
    Card,
    Checkpoint,
    LedgerEntry,
    LedgerHead,
    MerkleNode,
    WitnessCosignature,
    WitnessState,
)
from service.db.raw import Raw

entries_t = LedgerEntry.__table__
head_t = LedgerHead.__table__
nodes_t = MerkleNode.__table__
cp_t = Checkpoint.__table__
cosig_t = WitnessCosignature.__table__
wstate_t = WitnessState.__table__
NODES_PER_QUERY = 200  # a proof needs ~2 log n nodes: one query for any ledger below 2^100 entries


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


def _nodes_where(n: int, bind) -> str:
    """`(level = ? AND idx = ?) OR …` for n pairs: both databases answer it with n index lookups."""
    return "SELECT level, idx, hash FROM merkle_nodes WHERE " + " OR ".join(
        f"(level = {bind('l', i)} AND idx = {bind('i', i)})" for i in range(n)
    )


@lru_cache(maxsize=256)
def _nodes_sql(n: int):
    # Plain text: unlike a built expression it costs nothing to compile again.
    return text(_nodes_where(n, lambda name, i: f":{name}{i}"))


async def fetch_nodes(conn, ids: list[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    """The stored subtree hashes at (level, idx) `ids`, in one query per NODES_PER_QUERY nodes."""
    nodes: dict[tuple[int, int], bytes] = {}
    for i in range(0, len(ids), NODES_PER_QUERY):
        part = ids[i : i + NODES_PER_QUERY]
        params = {}
        for j, (lv, ix) in enumerate(part):
            params[f"l{j}"] = lv
            params[f"i{j}"] = ix
        rows = await conn.execute(_nodes_sql(len(part)), params)
        nodes.update({(int(r[0]), int(r[1])): bytes(r[2]) for r in rows})
    return nodes


def read_for_proof(sync_engine, plan, want_latest_checkpoint: bool = False):
    """On a worker thread, in one read transaction: the ledger size, the latest checkpoint's size (if
    asked), and the stored nodes `plan(size, checkpoint_size)` names. Returns (size, cp_size, nodes)."""
    with sync_engine.connect() as conn:
        raw = Raw(conn.connection.dbapi_connection, conn.dialect.name == "postgresql")
        with conn.begin():
            row = raw.one("SELECT size FROM ledger_head WHERE id = 1")
            size = int(row[0]) if row else 0
            cp_size = None
            if want_latest_checkpoint:
                row = raw.one("SELECT MAX(tree_size) FROM checkpoints")
                cp_size = int(row[0]) if row and row[0] is not None else None
            ids = plan(size, cp_size)
            nodes: dict[tuple[int, int], bytes] = {}
            for i in range(0, len(ids), NODES_PER_QUERY):
                part = ids[i : i + NODES_PER_QUERY]
                sql = _nodes_where(len(part), lambda _name, _i: "?")
                for lv, ix, h in raw.all(sql, tuple(x for pair in part for x in pair)):
                    nodes[(int(lv), int(ix))] = bytes(h)
            return size, cp_size, nodes


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


# ---------------------------------------------------------------- witnesses (state and cosignatures)


async def cosignatures(conn, tree_size: int) -> list:
    """The stored cosignatures of the checkpoint at `tree_size` (witness vkey, line, cosigned_at)."""
    return (await conn.execute(select(cosig_t).where(cosig_t.c.tree_size == tree_size))).all()


async def cosigning_witnesses(conn, tree_size: int) -> set[str]:
    """The vkeys of the witnesses that cosigned the checkpoint at `tree_size`."""
    stmt = select(cosig_t.c.witness).where(cosig_t.c.tree_size == tree_size)
    return {r.witness for r in (await conn.execute(stmt)).all()}


async def add_cosignature(conn, tree_size: int, witness: str, line: str, cosigned_at: int) -> None:
    """Raises IntegrityError when this witness's cosignature of this checkpoint is stored already."""
    await conn.execute(insert(cosig_t).values(tree_size=tree_size, witness=witness, line=line, cosigned_at=cosigned_at))


async def witness_states(conn) -> dict:
    """Each witness's state row (last_size, failures, retry_after_ms, last_error), by its vkey."""
    return {r.witness: r for r in (await conn.execute(select(wstate_t))).all()}


async def add_witness_state(conn, witness: str) -> None:
    """A fresh state row; raises IntegrityError when another replica made it first."""
    await conn.execute(insert(wstate_t).values(witness=witness, last_size=0, failures=0, retry_after_ms=0))


async def set_witness_state(conn, witness: str, **values) -> None:
    await conn.execute(update(wstate_t).where(wstate_t.c.witness == witness).values(**values))


async def witness_cosigned(conn, witness: str, size: int) -> None:
    """The witness cosigned the checkpoint at `size`: its failures are forgotten and its size moves up to
    `size`, never back (another replica may already have had a later checkpoint cosigned)."""
    w = wstate_t.c
    await conn.execute(update(wstate_t).where(w.witness == witness, w.last_size <= size).values(last_size=size))
    await set_witness_state(conn, witness, failures=0, retry_after_ms=0, last_error=None)


# ---------------------------------------------------------------- bare DB-API cursor (the walk, the backup)

CHECKPOINT_COLS = ("tree_size", "root_hash", "chain_head", "timestamp", "note", "signature", "key_id")
CheckpointRow = namedtuple("CheckpointRow", CHECKPOINT_COLS)


def _bind(is_pg: bool) -> str:
    return "%s" if is_pg else "?"


def head_row(cur) -> tuple | None:
    """(size, head) of the ledger head, or None before the first entry."""
    cur.execute("SELECT size, head FROM ledger_head WHERE id = 1")
    return cur.fetchone()


def latest_checkpoint(cur) -> CheckpointRow | None:
    cur.execute(f"SELECT {', '.join(CHECKPOINT_COLS)} FROM checkpoints ORDER BY tree_size DESC LIMIT 1")
    row = cur.fetchone()
    return CheckpointRow(*row) if row else None


def entries_from(cur, is_pg: bool, seq: int) -> int:
    """How many entries have a sequence number of `seq` or more."""
    cur.execute(f"SELECT COUNT(*) FROM ledger_entries WHERE seq >= {_bind(is_pg)}", (seq,))
    return int(cur.fetchone()[0])


def card_balances(cur) -> list[tuple]:
    """(id, price, released, refunded, held) of every card: what the ledger's per-card sums must equal."""
    cur.execute("SELECT id, price, released, refunded, held FROM cards")
    return cur.fetchall()


def walk_entries(is_pg: bool, lo: int | None, hi: int | None) -> tuple[str, list[int]]:
    """(sql, args) reading (seq, canonical, leaf_hash, chain_hash) of seq in [lo, hi) in seq order, for
    `walk.entry_chunks`. SQLite reads `canonical` as bytes (the exact UTF-8 hashed, no str round trip);
    PostgreSQL as text through a binary cursor (quicker there than `convert_to`)."""
    p = _bind(is_pg)
    where, args = [], []
    if lo is not None:
        where.append(f"seq >= {p}")
        args.append(lo)
    if hi is not None:
        where.append(f"seq < {p}")
        args.append(hi)
    canonical = "canonical" if is_pg else "CAST(canonical AS BLOB)"
    sql = (
        f"SELECT seq, {canonical}, leaf_hash, chain_hash FROM ledger_entries"
        f"{' WHERE ' + ' AND '.join(where) if where else ''} ORDER BY seq"
    )
    return sql, args


def chain_hash_at(is_pg: bool, seq: int) -> tuple[str, list[int]]:
    """(sql, args) reading the chain hash of entry `seq`: where a walk starting after it begins."""
    return f"SELECT chain_hash FROM ledger_entries WHERE seq = {_bind(is_pg)}", [seq]
