"""A C2SP tlog-witness (见证方): checks that each checkpoint extends the last one it cosigned, then cosigns.

Plain library, no HTTP and no database: `Witness.add_checkpoint(request body)` returns
(status, content type, body) exactly as `POST /add-checkpoint` answers. Its state (per log origin:
the size and root it last cosigned) lives in one JSON file, read, checked and replaced under a
lock (threads) and an exclusive file lock (processes), the new file written to a temporary name,
fsynced and renamed over the old, so a crash leaves either the old state or the new one.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import orjson

from .cosignature import ALG_ED25519, VKey, _verify_log_signature, cosign, parse_vkey, parse_witness_key
from .hashing import b64, unb64
from .merkle import ProofError, verify_consistency
from .note import (
    CheckpointError,
    parse_checkpoint_body,
    parse_decimal,
    parse_hash_lines,
    parse_note,
    split_at_blank_line,
)

__all__ = ["Witness", "WitnessState", "parse_add_checkpoint", "add_checkpoint_body"]

TEXT = "text/plain; charset=utf-8"
SIZE_TYPE = "text/x.tlog.size"


class BadRequest(ValueError):
    pass


def add_checkpoint_body(old: int, proof: list[bytes], note: str) -> bytes:
    """The request body of `POST /add-checkpoint`."""
    return (f"old {old}\n" + "".join(b64(h) + "\n" for h in proof) + "\n" + note).encode("utf-8")


def parse_add_checkpoint(body: bytes) -> tuple[int, list[bytes], str]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("request body is not UTF-8") from None
    lines, note = split_at_blank_line(text, BadRequest)
    old = parse_decimal(lines[0][4:]) if lines[0].startswith("old ") else None
    if old is None:
        raise BadRequest("first line must be 'old <size>'")
    return old, parse_hash_lines(lines[1:], BadRequest), note


class WitnessState:
    """{origin: (size, root)} in one JSON file, replaced atomically."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def read(self) -> dict[str, tuple[int, bytes]]:
        try:
            data = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        return {o: (int(v["size"]), unb64(v["root"])) for o, v in data.get("logs", {}).items()}

    def _write(self, state: dict[str, tuple[int, bytes]]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        data = orjson.dumps(
            {"logs": {o: {"size": s, "root": b64(r)} for o, (s, r) in state.items()}},
            option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2,
        )
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    @contextmanager
    def locked(self):
        """Hold the state for a check-then-update: no other thread or process changes it meanwhile."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            with open(self.path.with_name(self.path.name + ".lock"), "a+") as lockf:
                fcntl.flock(lockf, fcntl.LOCK_EX)
                try:
                    yield self
                finally:
                    fcntl.flock(lockf, fcntl.LOCK_UN)


class Witness:
    """One cosigner key, the logs it trusts (origin → vkeys) and its state file."""

    def __init__(self, key_text: str, log_vkeys: list[str], state_path: str | Path, clock=time.time) -> None:
        self.name, self._key, self.vkey = parse_witness_key(key_text)
        self.logs: dict[str, list[VKey]] = {}
        for v in log_vkeys:
            k = parse_vkey(v)
            if k.alg != ALG_ED25519:
                raise CheckpointError(f"log vkey {k.name} is not an Ed25519 (0x01) key")
            self.logs.setdefault(k.name, []).append(k)
        self.state = WitnessState(state_path)
        self._clock = clock

    def add_checkpoint(self, body: bytes) -> tuple[int, str, bytes]:
        """Answer `POST /add-checkpoint`: (HTTP status, content type, body), per C2SP tlog-witness."""
        try:
            old, proof, note = parse_add_checkpoint(body)
            parsed = parse_note(note)
            origin, size, root = parse_checkpoint_body(parsed.body)
        except (BadRequest, CheckpointError) as exc:
            return 400, TEXT, f"malformed request: {exc}\n".encode()
        keys = self.logs.get(origin)
        if keys is None:
            return 404, TEXT, b"unknown log origin\n"
        if not any(
            name == k.name and _verify_log_signature(parsed.body, k, blob)
            for name, blob in parsed.signatures
            for k in keys
        ):
            return 403, TEXT, b"no signature by a trusted log key verifies\n"
        if old > size:
            return 400, TEXT, b"old size is greater than the checkpoint size\n"
        with self.state.locked():
            state = self.state.read()
            last_size, last_root = state.get(origin, (0, None))
            if old != last_size:
                return 409, SIZE_TYPE, f"{last_size}\n".encode()
            if old == 0:
                if proof:
                    return 400, TEXT, b"the consistency proof must be empty when old is 0\n"
            elif old == size:
                if root != last_root:
                    return 409, TEXT, b"same size as the last cosigned checkpoint but a different root hash\n"
                if proof:
                    return 422, TEXT, b"the consistency proof must be empty for equal sizes\n"
            else:
                assert last_root is not None  # old == last_size > 0: a root was recorded with it
                try:
                    verify_consistency(old, size, last_root, root, proof)
                except ProofError as exc:
                    return 422, TEXT, f"consistency proof does not verify: {exc}\n".encode()
            if (last_size, last_root) != (size, root):
                state[origin] = (size, root)
                self.state._write(state)
        line = cosign(parsed.body, self.name, self._key, int(self._clock()))
        return 200, TEXT, line.encode("utf-8")
