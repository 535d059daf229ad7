"""SQLite compares times as text, so every writer must write a time as the same text: the raw write path
(`service/db/raw.py`) binds what `UTCDateTime` (`service/db/models.py`) stores through SQLAlchemy. Pinned
here over many instants: microseconds, zone offsets, year and day boundaries."""

from __future__ import annotations

import random
import sqlite3
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, create_engine, insert, select, text

from service.db.models import UTCDateTime
from service.db.raw import Raw

OFFSETS = [timedelta(hours=h, minutes=m) for h, m in ((0, 0), (8, 0), (5, 45), (-3, -30), (14, 0), (-12, 0), (9, 30))]
EDGES = [
    datetime(1999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    datetime(2000, 1, 1, tzinfo=UTC),
    datetime(2024, 2, 29, 12, 0, 0, 1, tzinfo=UTC),
    datetime(2026, 12, 31, 16, 0, tzinfo=UTC),  # midnight of new year's day in UTC+8
    datetime(2026, 3, 29, 1, 0, tzinfo=UTC),  # a DST change elsewhere: nothing to UTC
    datetime(1970, 1, 1, tzinfo=UTC),
    datetime(8999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
]


def instants(seed: int = 13) -> list[datetime]:
    rng = random.Random(seed)
    out = [edge + d for edge in EDGES for d in (timedelta(0), timedelta(microseconds=1), -timedelta(microseconds=1))]
    base = datetime(2026, 1, 1, tzinfo=UTC)
    out += [base + timedelta(microseconds=rng.randrange(-(10**15), 10**15)) for _ in range(300)]
    # The same instants written in other zones.
    return [t.astimezone(timezone(OFFSETS[i % len(OFFSETS)])) for i, t in enumerate(out)]


@pytest.fixture
def stored_by_sqlalchemy(tmp_path):
    """Each instant's text as SQLAlchemy stores a UTCDateTime column on SQLite."""
    engine = create_engine(f"sqlite:///{tmp_path / 't.db'}")
    table = Table("times", MetaData(), Column("id", Integer, primary_key=True), Column("t", UTCDateTime()))
    table.metadata.create_all(engine)
    times = instants()
    with engine.begin() as conn:
        conn.execute(insert(table), [{"id": i, "t": t} for i, t in enumerate(times)])
        texts = [row[0] for row in conn.execute(text("SELECT t FROM times ORDER BY id"))]
        read_back = [row[0] for row in conn.execute(select(table.c.t).order_by(table.c.id))]
    engine.dispose()
    return times, texts, read_back


def test_the_raw_path_writes_and_reads_a_time_as_sqlalchemy_does(stored_by_sqlalchemy):
    times, texts, read_back = stored_by_sqlalchemy
    raw = Raw(sqlite3.connect(":memory:"), is_pg=False)
    assert [raw.t(t) for t in times] == texts
    parsed = [raw.pt(s) for s in texts]
    assert parsed == read_back == times
    assert all(p.tzinfo is UTC for p in parsed)


def test_text_order_is_time_order(stored_by_sqlalchemy):
    times, texts, _ = stored_by_sqlalchemy
    assert sorted(range(len(times)), key=lambda i: texts[i]) == sorted(range(len(times)), key=lambda i: times[i])


def test_a_time_without_a_zone_is_refused_on_both_paths():
    raw = Raw(sqlite3.connect(":memory:"), is_pg=False)
    with pytest.raises(ValueError):
        raw.t(datetime(2026, 1, 1, 12, 0))
