"""File modes of the data folder (issue 12, finding 8): the folder is 0700, the database files and keys 0600.

This module owns `restrict_umask` (run first by every process entry point: `escrow …` and
`uvicorn service.main:app`, so whatever they create — the SQLite file and its `-wal`/`-shm`, keys,
backups — is private from the start) and `secure_data_dir`, which also fixes the modes of files an
earlier version or another tool created, at start-up and after a restore. Modes are only tightened on
entries owned by this user that are not symbolic links (a link is not ours to change).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_UMASK = 0o077
FOLDER_MODE = 0o700
FILE_MODE = 0o600
KEY_FILES = ("operator_token", "phone.key", "signing_key.pem")
SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")


def restrict_umask() -> int:
    """Make everything this process creates private to its user; returns the previous umask."""
    return os.umask(PRIVATE_UMASK)


def _tighten(path: Path, mode: int) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode) or st.st_uid != os.geteuid():
        return
    if stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)


def sqlite_file(settings) -> Path | None:
    url = settings.effective_database_url
    if not url.startswith("sqlite"):
        return None
    return Path(url.split(":///", 1)[1])


def secure_data_dir(settings) -> None:
    """Create the data folder 0700 if missing, and bring it, its keys and the SQLite files to their modes."""
    data = Path(settings.data_dir)
    data.mkdir(parents=True, exist_ok=True, mode=FOLDER_MODE)
    _tighten(data, FOLDER_MODE)
    for name in KEY_FILES:
        _tighten(data / name, FILE_MODE)
    db = sqlite_file(settings)
    if db is not None:
        for suffix in SQLITE_SUFFIXES:
            _tighten(Path(str(db) + suffix), FILE_MODE)
