"""The auth epoch's watch on SQLite (service/security/revocation.py): it skips the epoch read while
the WAL index shows that nothing committed since the last read, and reads again after any commit by
any connection of any process, so a revocation is still seen at once. These run on a SQLite file of
their own whatever the test database is; the HTTP story at the end runs on the test database."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from api_tests.factories import OP, assert_error, create_merchant
from api_tests.test_phone_verification import second_instance
from service.security.revocation import EpochWatch


def _database(path: Path, wal: bool = True) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    if wal:
        assert conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    conn.execute("CREATE TABLE app_state (name TEXT PRIMARY KEY, value TEXT)")
    conn.execute("CREATE TABLE other (n INTEGER)")
    conn.execute("INSERT INTO app_state VALUES ('auth_epoch', 'ep_1')")
    return conn


def _watch(path: Path) -> EpochWatch:
    return EpochWatch(f"sqlite+aiosqlite:///{path}")


async def test_no_commit_no_read_and_any_commit_reads_again(tmp_path):
    db = _database(tmp_path / "e.db")
    watch = _watch(tmp_path / "e.db")
    try:
        assert [await watch.current() for _ in range(3)] == ["ep_1"] * 3
        settled = watch.reads
        assert [await watch.current() for _ in range(50)] == ["ep_1"] * 50
        assert watch.reads == settled  # nothing committed: no statement

        db.execute("INSERT INTO other VALUES (1)")  # a commit that leaves the epoch alone
        assert await watch.current() == "ep_1"
        assert watch.reads == settled + 1

        db.execute("BEGIN IMMEDIATE")
        db.execute("UPDATE app_state SET value = 'ep_2'")
        assert await watch.current() == "ep_1"  # not committed yet
        db.execute("COMMIT")
        assert await watch.current() == "ep_2"  # the first call after the commit
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("UPDATE app_state SET value = 'ep_3'")  # the first commit into a restarted WAL
        assert await watch.current() == "ep_3"
    finally:
        watch.close()
        db.close()


async def test_a_commit_in_another_process_is_seen_at_once(tmp_path):
    path = tmp_path / "e.db"
    db = _database(path)
    watch = _watch(path)
    try:
        for _ in range(3):
            assert await watch.current() == "ep_1"
        script = (
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
            "c.execute(\"UPDATE app_state SET value = 'ep_other' WHERE name = 'auth_epoch'\"); c.close()"
        )
        subprocess.run([sys.executable, "-c", script, str(path)], check=True)
        assert await watch.current() == "ep_other"
    finally:
        watch.close()
        db.close()


async def test_without_a_wal_every_call_reads(tmp_path):
    db = _database(tmp_path / "r.db", wal=False)
    watch = _watch(tmp_path / "r.db")
    try:
        for _ in range(5):
            assert await watch.current() == "ep_1"
        assert watch.reads == 5
        db.execute("UPDATE app_state SET value = 'ep_2'")
        assert await watch.current() == "ep_2"
    finally:
        watch.close()
        db.close()


async def test_a_revocation_after_a_run_of_cached_requests_is_401_at_once_on_both_replicas(client, data_dir):
    gym = await create_merchant(client)
    async with second_instance(data_dir) as replica:
        for _ in range(20):  # the key cached on both, and the epoch watched with no commit in between
            assert (await client.get("/v1/merchants/me", headers=gym["headers"])).status_code == 200
            assert (await replica.get("/v1/merchants/me", headers=gym["headers"])).status_code == 200
        assert (await client.post(f"/v1/keys/{gym['id']}/revoke", headers=OP)).status_code == 200
        assert_error(await replica.get("/v1/merchants/me", headers=gym["headers"]), 401, "bad_token")
        assert_error(await client.get("/v1/merchants/me", headers=gym["headers"]), 401, "bad_token")


async def test_the_watch_leaves_this_process_s_sqlite_locks_alone(tmp_path):
    """SQLite's locks on the WAL index belong to the process: closing any descriptor of that file would drop
    them, and another process would then reset the file under this one's connections. While a connection
    of ours is open, another process must not get the exclusive lock that a reset takes (byte 128, the
    unix VFS's 'DMS' lock), whatever the watch did: map the index, read, close."""
    path = tmp_path / "e.db"
    db = _database(path)
    db.execute("SELECT value FROM app_state").fetchall()
    probe = (
        "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR)\n"
        "try:\n    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 128)\nexcept OSError:\n    sys.exit(3)\n"
        "sys.exit(0)"
    )

    def reset_lock_free() -> bool:
        done = subprocess.run([sys.executable, "-c", probe, f"{path}-shm"])
        assert done.returncode in (0, 3)
        return done.returncode == 0

    try:
        assert not reset_lock_free()
        for _ in range(2):
            watch = _watch(path)
            for _ in range(3):
                assert await watch.current() == "ep_1"
            assert not reset_lock_free()
            watch.close()
            assert not reset_lock_free()
    finally:
        db.close()
