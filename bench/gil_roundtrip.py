#!/usr/bin/env python
"""What one database round trip costs the writer thread when another thread is busy.

The service's writer thread shares the interpreter lock (GIL) with the HTTP thread. Each statement
psycopg sends lets the GIL go while it waits for PostgreSQL; getting it back from a thread that is
running Python takes up to the switch interval (5 ms by default). This measures `SELECT 1` round
trips on one connection, first with the process otherwise idle, then with a second thread spinning
in Python, at a few switch intervals. (SQLite answers in-process within microseconds and shows no
such cost.) It is why the writer sends a batch's writes as one script and reads the batch's rows in
one statement (service/db/raw.py) instead of a few statements per request.

    python bench/gil_roundtrip.py                                   # SQLite file in a temp folder
    python bench/gil_roundtrip.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path


def connect(url: str):
    if url:
        import psycopg

        conn = psycopg.connect(url, autocommit=True)
        return conn.cursor(), "PostgreSQL"
    path = Path(tempfile.mkdtemp(prefix="gil-rt-")) / "x.db"
    return sqlite3.connect(path, check_same_thread=False).cursor(), "SQLite"


def per_round_trip_us(cur, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        cur.execute("SELECT 1")
        cur.fetchone()
    return (time.perf_counter() - t) / n * 1e6


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--database-url", default="")
    p.add_argument("--n", type=int, default=2000, help="round trips per measurement with the process idle")
    args = p.parse_args()
    cur, name = connect(args.database_url)
    idle = per_round_trip_us(cur, args.n)
    print(f"{name}: SELECT 1 round trip, process idle            {idle:10.1f} µs")
    stop = threading.Event()

    def busy() -> None:
        x = 0
        while not stop.is_set():
            for i in range(1000):
                x += i

    spinner = threading.Thread(target=busy, daemon=True)
    spinner.start()
    try:
        for interval in (0.005, 0.0005, 0.00005):
            sys.setswitchinterval(interval)
            n = max(20, min(args.n, int(0.5 / max(interval, 1e-4))))
            busy_us = per_round_trip_us(cur, n)
            print(
                f"{name}: same, another thread busy, switch {interval * 1000:5.2f} ms {busy_us:10.1f} µs"
                f"   ({busy_us / idle:,.0f} × idle)"
            )
    finally:
        stop.set()
        spinner.join()
        sys.setswitchinterval(0.005)
    return 0


if __name__ == "__main__":
    sys.exit(main())
