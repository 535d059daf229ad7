"""Online backups and verified restores: `escrow backup create DEST`, `escrow backup restore SRC [--force]`.

A backup is a folder:

- the database: `escrow.db` (SQLite, taken with SQLite's online backup API: one consistent
  snapshot while the service keeps writing) or `escrow.dump` (PostgreSQL, `pg_dump --format=custom`
  run inside an exported REPEATABLE READ snapshot, so the manifest describes exactly what was dumped);
- the keys found in the data folder (`operator_token`, `phone.key`, `signing_key.pem`), mode 0600;
  keys given by configuration (`ESCROW_PHONE_KEY`, `ESCROW_SIGNING_KEY`…) are not copied and must be
  given again on restore;
- `manifest.json`, written last: time, database kind, ledger tree size and chain head at the
  snapshot, latest checkpoint size, and the SHA-256 of every file.

A restore first checks the manifest and the files, and writes nothing until every check passed: only
the known key names (`operator_token`, `phone.key`, `signing_key.pem`) and the database file of the
manifest's kind (`escrow.db` or `escrow.dump`) are accepted, each must be listed with its SHA-256 and
match it, and each must be a regular file directly inside the backup folder (no `..`, no absolute
path, no symbolic link) whose place in the data folder is not a link either. It then checks the
checksums, refuses a non-empty target unless `--force`, loads the database,
then runs the full ledger verification (every leaf and chain hash, the Merkle root, the latest
checkpoint's signature with the key the restored service will use, ledger sums against card
balances) and checks the ledger's size and head against the manifest. If anything fails it exits
non-zero and leaves nothing servable behind: a restore verifies the ledger before it serves.
"""

from __future__ import annotations

import asyncio
import glob
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from service.core.settings import Settings, get_settings

FORMAT = "escrow-backup/1"
KEY_FILES = ("operator_token", "phone.key", "signing_key.pem")
SQLITE_FILE = "escrow.db"
PG_FILE = "escrow.dump"
MANIFEST = "manifest.json"
DATABASE_FILES = {"sqlite": SQLITE_FILE, "postgresql": PG_FILE}  # the only database file each kind restores
CONFIGURED_KEYS = ("ESCROW_OPERATOR_TOKEN", "ESCROW_PHONE_KEY", "ESCROW_SIGNING_KEY")


class BackupError(Exception):
    """A backup or restore that must not go on; the message says why, for a person."""


# ---------------------------------------------------------------------------------------------
# Where the database is
# ---------------------------------------------------------------------------------------------


def sqlite_path(settings: Settings) -> Path:
    url = settings.effective_database_url
    return Path(url.split(":///", 1)[1])


def libpq_url(settings: Settings) -> str:
    """The configured PostgreSQL URL without a SQLAlchemy driver (`postgresql+asyncpg://` → `postgresql://`)."""
    p = urlsplit(settings.database_url)
    return urlunsplit(("postgresql", p.netloc, p.path, p.query, p.fragment))


def pg_tool(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found

    def version(path: str) -> float:
        try:
            return float(Path(path).parent.parent.name)
        except ValueError:
            return 0.0

    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=version, reverse=True)
    if not candidates:
        raise BackupError(
            f"{name} was not found on PATH nor under /usr/lib/postgresql/*/bin; install the PostgreSQL client."
        )
    return candidates[0]


def _run(cmd: list[str], what: str, timeout: float = 3600) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise BackupError(f"{what} failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# Create
# ---------------------------------------------------------------------------------------------


def _sqlite_snapshot(src_path: Path, dest_path: Path) -> dict:
    if not src_path.exists():
        raise BackupError(f"there is no database at {src_path}")
    src = sqlite3.connect(src_path, timeout=30)
    dst = sqlite3.connect(dest_path)
    try:
        src.execute("PRAGMA busy_timeout=30000")
        src.backup(dst)  # every page in one step: one consistent read snapshot, however busy the writer is
    finally:
        src.close()
    try:
        ok = dst.execute("PRAGMA quick_check").fetchone()[0]
        if ok != "ok":
            raise BackupError(f"the copied database fails SQLite's quick_check: {ok}")
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        return _ledger_state(dst.cursor())
    finally:
        dst.close()


def _ledger_state(cur) -> dict:
    """What the manifest states of the snapshot `cur` (a DB-API cursor) reads: the ledger's head and latest
    checkpoint (the ledger repository's statements) and the schema revision (Alembic's own table)."""
    from service.ledger_api import repository

    head = repository.head_row(cur)
    cp = repository.latest_checkpoint(cur)
    cur.execute("SELECT version_num FROM alembic_version")
    rev = cur.fetchone()
    return {
        "tree_size": int(head[0]) if head else 0,
        "chain_head": bytes(head[1]).hex() if head else None,
        "checkpoint_tree_size": int(cp.tree_size) if cp else None,
        "schema_revision": rev[0] if rev else None,
    }


def _pg_snapshot(url: str, dest_path: Path) -> dict:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        state = _ledger_state(conn.cursor())
        # pg_dump reads the very snapshot the manifest describes, while this transaction stays open.
        _run(
            [
                pg_tool("pg_dump"),
                "--format=custom",
                f"--snapshot={snapshot}",
                "--no-owner",
                "--no-privileges",
                "--file",
                str(dest_path),
                "--dbname",
                url,
            ],
            "pg_dump",
        )
        conn.execute("COMMIT")
    return state


def create_backup(settings: Settings, dest: Path) -> dict:
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BackupError(f"{dest} exists and is not an empty folder; give a new folder for the backup.")
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    files: dict[str, dict] = {}
    if settings.is_sqlite:
        kind, db_file = "sqlite", SQLITE_FILE
        state = _sqlite_snapshot(sqlite_path(settings), dest / db_file)
    else:
        kind, db_file = "postgresql", PG_FILE
        state = _pg_snapshot(libpq_url(settings), dest / db_file)
    os.chmod(dest / db_file, 0o600)
    keys = []
    for name in KEY_FILES:
        src = settings.data_dir / name
        if src.is_file():
            _write_private(dest / name, src.read_bytes())
            keys.append(name)
    for name in [db_file, *keys]:
        files[name] = {"sha256": sha256_file(dest / name), "bytes": (dest / name).stat().st_size}
    configured = [
        n
        for n, v in (
            ("ESCROW_OPERATOR_TOKEN", settings.operator_token),
            ("ESCROW_PHONE_KEY", settings.phone_key),
            ("ESCROW_SIGNING_KEY", settings.signing_key),
        )
        if v
    ]
    manifest = {
        "format": FORMAT,
        "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "database": kind,
        "database_file": db_file,
        **state,
        "ledger_origin": settings.ledger_origin,
        "keys": keys,
        "keys_from_configuration": configured,
        "files": files,
    }
    tmp = dest / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, dest / MANIFEST)
    _fsync_dir(dest)
    return manifest


# ---------------------------------------------------------------------------------------------
# Restore
# ---------------------------------------------------------------------------------------------


def _inside(folder: Path, name: str, what: str) -> Path:
    """`folder / name` for a plain file name, refusing anything that could land elsewhere."""
    if (
        not isinstance(name, str)
        or not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or "\x00" in name
        or os.path.isabs(name)
    ):
        raise BackupError(f"the manifest names {what} {name!r}, which is not a plain file name.")
    path = folder / name
    if path.is_symlink():
        raise BackupError(f"{path} is a symbolic link; a restore follows no links.")
    if path.resolve().parent != folder.resolve():
        raise BackupError(f"{what} {name!r} resolves outside {folder}.")
    return path


def read_manifest(src: Path) -> dict:
    """The backup's manifest, once every file it names is known, listed, checksummed and inside `src`.

    Refuses (BackupError) unknown key names, a database file other than its kind's, a file restored but
    not listed with a SHA-256, a listed file not restored, and any name that is a path or a link."""
    src = Path(src)
    path = src / MANIFEST
    if not path.is_file() or path.is_symlink():
        raise BackupError(f"{src} has no {MANIFEST}: not a backup, or an incomplete one.")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as exc:
        raise BackupError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{path} is not an {FORMAT} manifest.")
    kind = manifest.get("database")
    if kind not in DATABASE_FILES:
        raise BackupError(f"the manifest's database {kind!r} is not one of {', '.join(DATABASE_FILES)}.")
    db_file = manifest.get("database_file")
    if db_file != DATABASE_FILES[kind]:
        raise BackupError(
            f"the manifest's database_file {db_file!r} is not {DATABASE_FILES[kind]!r}, "
            f"the only database file a {kind} backup holds."
        )
    keys = manifest.get("keys", [])
    if not isinstance(keys, list) or len(set(map(str, keys))) != len(keys):
        raise BackupError("the manifest's keys must be a list of distinct names.")
    for name in keys:
        if name not in KEY_FILES:
            raise BackupError(
                f"the manifest names an unknown key {name!r}; a backup holds only {', '.join(KEY_FILES)}."
            )
    configured = manifest.get("keys_from_configuration", [])
    if not isinstance(configured, list) or any(n not in CONFIGURED_KEYS for n in configured):
        raise BackupError(f"the manifest's keys_from_configuration may name only {', '.join(CONFIGURED_KEYS)}.")
    if not isinstance(manifest.get("tree_size"), int) or isinstance(manifest.get("tree_size"), bool):
        raise BackupError("the manifest's tree_size must be an integer.")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise BackupError("the manifest lists no files.")
    restored = {db_file, *keys}
    for name in sorted(set(files) - restored, key=str):
        raise BackupError(f"the manifest lists an unexpected file {name!r}: neither its database file nor a known key.")
    for name in sorted(restored - set(files)):
        raise BackupError(
            f"the manifest does not list {name!r} with a checksum; every restored file must be checksummed."
        )
    for name in sorted(restored):
        info = files[name]
        digest = info.get("sha256") if isinstance(info, dict) else None
        if not isinstance(digest, str) or len(digest) != 64:
            raise BackupError(f"the manifest gives no SHA-256 for {name}.")
        f = _inside(src, name, "file")
        if not f.is_file():
            raise BackupError(f"the backup lacks {name}, which its manifest lists.")
        if sha256_file(f) != digest:
            raise BackupError(
                f"{name} does not match the SHA-256 in the manifest: the backup is damaged or was altered."
            )
    return manifest


def _pg_has_tables(url: str) -> bool:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        n = conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'").fetchone()[0]
    return n > 0


def _pg_wipe(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
        conn.execute("CREATE SCHEMA public")


def _public_key(settings: Settings, staged_keys: Path):
    from ledger.checkpoint import load_private_key, public_key_raw

    if settings.signing_key:
        pem = settings.signing_key.encode()
    elif (staged_keys / "signing_key.pem").is_file():
        pem = (staged_keys / "signing_key.pem").read_bytes()
    else:
        return None
    return public_key_raw(load_private_key(pem))


async def _verify(url: str, public_key) -> dict:
    from sqlalchemy.ext.asyncio import create_async_engine

    from service.ledger_api.service import verify_ledger

    engine = create_async_engine(url)
    try:
        return await verify_ledger(engine, public_key=public_key)
    finally:
        await engine.dispose()


def _check(report: dict, manifest: dict, public_key) -> list[str]:
    """Problems found by the verification and against the manifest (empty: the restore may serve)."""
    problems = []
    if not report["ok"]:
        where = f" at seq {report['bad_seq']}" if report.get("bad_seq") is not None else ""
        problems.append(f"the ledger does not verify{where}: {report['reason']}")
        return problems
    if report["size"] != manifest["tree_size"]:
        problems.append(f"the restored ledger has {report['size']} entries; the manifest says {manifest['tree_size']}")
    elif manifest["chain_head"] is not None and report["chain_head"] != manifest["chain_head"]:
        problems.append("the restored ledger's chain head differs from the manifest's")
    if manifest.get("checkpoint_tree_size") is not None and public_key is None:
        problems.append(
            "there is no signing key (neither in the backup nor ESCROW_SIGNING_KEY) to check the checkpoint with"
        )
    return problems


def restore_backup(settings: Settings, src: Path, force: bool = False, say=print) -> dict:
    src = Path(src)
    manifest = read_manifest(src)
    kind = "sqlite" if settings.is_sqlite else "postgresql"
    if manifest["database"] != kind:
        raise BackupError(
            f"the backup holds a {manifest['database']} database but the service is configured for {kind}."
        )
    for name in manifest.get("keys_from_configuration", []):
        if not getattr(settings, name.removeprefix("ESCROW_").lower()):
            say(f"note: the backed-up service took {name} from its configuration; set it again before serving")
    data = Path(settings.data_dir)
    keys = manifest.get("keys", [])
    if data.exists():
        for name in keys:  # where each key will go must be the data folder itself, not a link out of it
            _inside(data, name, "key")
    present = [n for n in keys if (data / n).exists() and (data / n).read_bytes() != (src / n).read_bytes()]
    if kind == "sqlite":
        target = sqlite_path(settings)
        occupied = target.exists() and target.stat().st_size > 0
        url_for_verify = None
    else:
        occupied = _pg_has_tables(libpq_url(settings))
    if (occupied or present) and not force:
        what = (
            ("the database already holds tables" if kind == "postgresql" else f"{target} already exists")
            if occupied
            else f"the data folder already holds other keys ({', '.join(present)})"
        )
        raise BackupError(f"refusing to restore: {what}. Stop the service and give --force to overwrite it.")

    # Every check passed: only now is anything written.
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    staging = Path(tempfile.mkdtemp(prefix=".restore-", dir=data))
    try:
        for name in keys:
            _write_private(_inside(staging, name, "key"), (src / name).read_bytes())
        public_key = _public_key(settings, staging)
        if kind == "sqlite":
            staged_db = staging / SQLITE_FILE
            shutil.copyfile(src / manifest["database_file"], staged_db)
            url_for_verify = f"sqlite+aiosqlite:///{staged_db}"
        else:
            url = libpq_url(settings)
            if occupied:
                _pg_wipe(url)
            _run(
                [
                    pg_tool("pg_restore"),
                    "--no-owner",
                    "--no-privileges",
                    "--exit-on-error",
                    "--single-transaction",
                    "--dbname",
                    url,
                    str(src / manifest["database_file"]),
                ],
                "pg_restore",
            )
            url_for_verify = settings.effective_database_url
        say(f"verifying the restored ledger ({manifest['tree_size']} entries)…")
        report = asyncio.run(_verify(url_for_verify, public_key))
        problems = _check(report, manifest, public_key)
        if problems:
            if kind == "postgresql":
                _pg_wipe(libpq_url(settings))  # serve nothing unverified
            raise BackupError("restore refused, nothing was restored: " + "; ".join(problems))
        # Verified: put it in place.
        for name in keys:
            os.replace(staging / name, data / name)
        if kind == "sqlite":
            target = sqlite_path(settings)
            target.parent.mkdir(parents=True, exist_ok=True)
            for suffix in ("-wal", "-shm", "-journal"):  # a stale WAL would be replayed onto the restored file
                Path(str(target) + suffix).unlink(missing_ok=True)
            os.replace(staged_db, target)
        _fsync_dir(data)
        from service.core.filemodes import secure_data_dir

        secure_data_dir(settings)
        return {"manifest": manifest, "report": report}
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def _cmd_create(args) -> int:
    try:
        m = create_backup(get_settings(), Path(args.dest))
    except BackupError as exc:
        print(f"backup FAILED: {exc}", file=sys.stderr)
        return 1
    print(
        f"backup written to {args.dest}: {m['database']} database, ledger tree size {m['tree_size']}, "
        f"chain head {m['chain_head']}, keys {', '.join(m['keys']) or 'none'}"
    )
    return 0


def _cmd_restore(args) -> int:
    try:
        out = restore_backup(get_settings(), Path(args.src), force=args.force)
    except BackupError as exc:
        print(f"restore FAILED: {exc}", file=sys.stderr)
        return 1
    from service.cli import print_verified

    print_verified(out["report"], f"restored {out['manifest']['database']} backup of {out['manifest']['created_at']}: ")
    return 0


def add_commands(sub) -> None:
    backup = sub.add_parser("backup", help="online backups and verified restores").add_subparsers(
        dest="backup_command", required=True
    )
    p = backup.add_parser(
        "create", help="take a consistent backup of the running service's database and keys into DEST"
    )
    p.add_argument("dest")
    p.set_defaults(func=_cmd_create)
    p = backup.add_parser(
        "restore", help="restore SRC into the configured data folder / database, then verify the ledger"
    )
    p.add_argument("src")
    p.add_argument("--force", action="store_true", help="overwrite a non-empty target")
    p.set_defaults(func=_cmd_restore)
