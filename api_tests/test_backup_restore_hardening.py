"""A restore writes nothing it was not meant to (issue 12, finding 7), on the command line.

A backup of a freshly migrated service is taken with `escrow backup create`, then altered the way
an attacker who can hand an operator a backup folder would: a key named `../../x` (listed and
checksummed, with the payload beside the folder), a `database_file` of `../../y`, a key restored
but not checksummed, a key that is a symbolic link out of the backup, a key whose place in the data
folder is a link out of it. Each restore exits non-zero with a clear message and writes nothing:
no file outside the data folder, not even the data folder itself. The untouched backup restores,
and leaves the data folder 0700 and its database 0600."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from api_tests.realserver import ON_POSTGRES, cli, fresh_database, server_env


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def _save(folder: Path, m: dict) -> None:
    (folder / "manifest.json").write_text(json.dumps(m, indent=2, sort_keys=True))


def _list(m: dict, name: str, data: bytes) -> None:
    m["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def _key_outside(src: Path, work: Path, listed: bool = False) -> None:
    (work / "x").write_bytes(b"PWNED")  # src/../../x is work/x; from the staging folder, ../../x is target/x
    m = _manifest(src)
    m["keys"].append("../../x")
    if listed:  # a careful attacker checksums it too
        _list(m, "../../x", b"PWNED")
    _save(src, m)


def _key_outside_listed(src: Path, work: Path) -> None:
    _key_outside(src, work, listed=True)


def _absolute_key(src: Path, work: Path) -> None:
    (work / "x").write_bytes(b"PWNED")
    m = _manifest(src)
    m["keys"].append(str(work / "target" / "x"))
    _list(m, str(work / "target" / "x"), b"PWNED")
    _save(src, m)


def _database_file_outside(src: Path, work: Path, listed: bool = False) -> None:
    m = _manifest(src)
    db = m["database_file"]
    data = (src / db).read_bytes()
    (work / "y").write_bytes(data)
    m["database_file"] = "../../y"
    if listed:
        _list(m, "../../y", data)
    _save(src, m)


def _database_file_outside_listed(src: Path, work: Path) -> None:
    _database_file_outside(src, work, listed=True)


def _key_not_checksummed(src: Path, work: Path) -> None:
    (src / "phone.key").write_bytes(b"k" * 32)
    m = _manifest(src)
    m["keys"].append("phone.key")
    _save(src, m)


def _key_is_a_link_out(src: Path, work: Path) -> None:
    (work / "secret.pem").write_bytes(b"someone else's key")
    (src / "signing_key.pem").symlink_to(work / "secret.pem")
    m = _manifest(src)
    m["keys"].append("signing_key.pem")
    _list(m, "signing_key.pem", b"someone else's key")
    _save(src, m)


ATTACKS = {
    "key ../../x": (_key_outside, "unknown key '../../x'"),
    "key ../../x, checksummed": (_key_outside_listed, "unknown key '../../x'"),
    "absolute key": (_absolute_key, "unknown key"),
    "database_file ../../y": (_database_file_outside, "database_file '../../y'"),
    "database_file ../../y, checksummed": (_database_file_outside_listed, "database_file '../../y'"),
    "key not checksummed": (_key_not_checksummed, "does not list 'phone.key'"),
    "key is a symlink": (_key_is_a_link_out, "symbolic link"),
}


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"") for p in sorted(folder.rglob("*"))}


@pytest.fixture
async def backup():
    """(work folder, a pristine backup of a freshly migrated service, the database to restore into)."""
    work = Path(tempfile.mkdtemp(prefix="escrow-restore-"))
    dbs = [await fresh_database("escrow_restore_src"), await fresh_database("escrow_restore_dst")]
    try:
        env = server_env(work / "source", dbs[0])
        proc = cli(env, "migrate")
        assert proc.returncode == 0, proc.stderr
        proc = cli(env, "backup", "create", str(work / "pristine"))
        assert proc.returncode == 0, proc.stderr
        yield work, work / "pristine", dbs[1]
    finally:
        for db in dbs:
            await db.drop()
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.parametrize("attack", list(ATTACKS))
async def test_a_backup_manifest_naming_a_path_out_writes_nothing_outside_the_data_folder(backup, attack):
    work, pristine, target_db = backup
    alter, message = ATTACKS[attack]
    src = work / "backups" / "b1"
    shutil.copytree(pristine, src)
    alter(src, work)
    (work / "target").mkdir()
    before = _tree(work)
    env = server_env(work / "target" / "data", target_db)
    proc = cli(env, "backup", "restore", str(src))
    assert proc.returncode != 0, proc.stdout
    assert "restore FAILED" in proc.stderr and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert _tree(work) == before  # nothing written anywhere: not the payload, not even the data folder
    assert not (work / "target" / "x").exists() and not (work / "target" / "data").exists()


async def test_a_key_whose_place_in_the_data_folder_links_out_is_refused_even_with_force(backup):
    work, pristine, target_db = backup
    src = work / "b2"
    shutil.copytree(pristine, src)
    (src / "operator_token").write_bytes(b"op_from_backup")
    m = _manifest(src)
    m["keys"].append("operator_token")
    _list(m, "operator_token", b"op_from_backup")
    _save(src, m)
    data = work / "target" / "data"
    data.mkdir(parents=True)
    (work / "victim").write_bytes(b"not yours")
    (data / "operator_token").symlink_to(work / "victim")
    before = _tree(work)
    proc = cli(server_env(data, target_db), "backup", "restore", "--force", str(src))
    assert proc.returncode != 0 and "symbolic link" in proc.stderr, proc.stderr
    assert _tree(work) == before and (work / "victim").read_bytes() == b"not yours"


async def test_the_untouched_backup_restores_into_a_private_data_folder(backup):
    work, pristine, target_db = backup
    data = work / "restored" / "data"
    proc = cli(server_env(data, target_db), "backup", "restore", str(pristine))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ledger OK" in proc.stdout
    assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
    if not ON_POSTGRES:
        assert stat.S_IMODE(os.stat(data / "escrow.db").st_mode) == 0o600
    for p in data.iterdir():
        assert stat.S_IMODE(os.stat(p).st_mode) & 0o077 == 0, p
