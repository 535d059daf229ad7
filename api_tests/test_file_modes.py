"""The data folder is private (issue 12, finding 8): a served data folder is 0700, its database files
(`escrow.db`, `-wal`, `-shm`) and keys 0600 — both when the service creates them (umask 0o077 at
start-up) and when an earlier version left them readable (modes fixed at start-up)."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

from api_tests.realserver import ON_POSTGRES, RealServer, fresh_database, new_consumer, new_merchant


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


async def _served(data: Path, db) -> dict[str, int]:
    server = RealServer(data, db, "modes")
    try:
        await server.start()
        http = server.client(4)
        await new_merchant(http, "Private Gym 私密健身")
        await new_consumer(http, 1)
        names = {p.name: mode(p) for p in data.iterdir() if p.suffix != ".log"}  # the log is the harness's
        await http.close()
    finally:
        server.stop()
    return names


async def test_a_freshly_served_data_folder_is_private():
    work = Path(tempfile.mkdtemp(prefix="escrow-modes-"))
    db = await fresh_database("escrow_modes")
    try:
        data = work / "data"
        found = await _served(data, db)
        assert mode(data) == 0o700
        expected = {"phone.key", "signing_key.pem"}  # the harness gives the operator token by configuration
        if not ON_POSTGRES:
            expected |= {"escrow.db", "escrow.db-wal", "escrow.db-shm"}
        assert expected <= set(found), found
        assert {name: m for name, m in found.items() if name in expected} == dict.fromkeys(expected, 0o600)
        assert all(m & 0o077 == 0 for m in found.values()), found
    finally:
        await db.drop()
        shutil.rmtree(work, ignore_errors=True)


async def test_modes_an_earlier_version_left_open_are_fixed_at_start_up():
    work = Path(tempfile.mkdtemp(prefix="escrow-modes-"))
    db = await fresh_database("escrow_modes")
    try:
        data = work / "data"
        await _served(data, db)
        os.chmod(data, 0o755)  # what main (e0afbc6) left: a world-readable folder and database
        for p in data.iterdir():
            os.chmod(p, 0o644)
        found = await _served(data, db)
        assert mode(data) == 0o700
        assert all(m == 0o600 for m in found.values()), found
    finally:
        await db.drop()
        shutil.rmtree(work, ignore_errors=True)
