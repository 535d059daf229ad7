"""The C2SP text formats, parsed in one place: signed notes, checkpoint bodies, proof lines.

- signed-note: UTF-8 text ending in a newline; a body, one blank line, then signature lines
  `— <key name> <base64(key id ‖ signature)>`; key names have no whitespace and no `+`;
- tlog-checkpoint body: origin, decimal tree size and base64 root hash lines (extension lines may follow);
- the lines of base64 hashes that tlog-proof and tlog-witness put before an empty line and a note.

Checkpoints, cosignatures, receipts and the witness all parse through these functions; they raise
`CheckpointError` (a `ValueError`), or the error class the caller names for its own format.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .hashing import HASH_SIZE, b64, unb64

__all__ = [
    "EM_DASH",
    "CheckpointError",
    "ParsedNote",
    "check_key_name",
    "parse_decimal",
    "parse_note",
    "signature_line",
    "add_signature_lines",
    "parse_checkpoint_body",
    "split_at_blank_line",
    "parse_hash_lines",
    "parse_hash",
]

EM_DASH = "\u2014"
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}")


class CheckpointError(ValueError):
    """A checkpoint, note or key failed to parse or verify."""


@dataclass(frozen=True)
class ParsedNote:
    body: str  # the text that is signed, ending in a newline
    signatures: list[tuple[str, bytes]]  # (key name, key id ‖ signature)


def check_key_name(name: str) -> None:
    # C2SP signed-note: non-empty, no whitespace, no '+'.
    if not isinstance(name, str) or not name or "+" in name or any(c.isspace() for c in name):
        raise CheckpointError(f"invalid key name / origin {name!r}")


def parse_decimal(text: str) -> int | None:
    """A size or index as C2SP writes it (decimal, no sign, no leading zero, at most 19 digits), else None."""
    return int(text) if _DECIMAL.fullmatch(text) else None


def parse_note(text: str) -> ParsedNote:
    """Split a signed note into its body and its signature lines (C2SP signed-note)."""
    if not isinstance(text, str) or not text.endswith("\n"):
        raise CheckpointError("note must be text ending in a newline")
    body, sep, block = text.partition("\n\n")
    if not sep or not block:
        raise CheckpointError("note has no blank line before its signatures")
    sigs: list[tuple[str, bytes]] = []
    for line in block[:-1].split("\n"):
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != EM_DASH:
            raise CheckpointError(f"malformed signature line {line!r}")
        check_key_name(parts[1])
        try:
            blob = unb64(parts[2])
        except ValueError as exc:
            raise CheckpointError(f"signature line: {exc}") from None
        if len(blob) < 5:
            raise CheckpointError("signature line too short")
        sigs.append((parts[1], blob))
    return ParsedNote(body + "\n", sigs)


def signature_line(name: str, blob: bytes) -> str:
    return f"{EM_DASH} {name} {b64(blob)}\n"


def add_signature_lines(note: str, lines: list[str]) -> str:
    """The note with more signature lines appended (duplicates dropped)."""
    have = set(note.split("\n\n", 1)[1].splitlines(keepends=True)) if "\n\n" in note else set()
    out = note
    for line in lines:
        if not line.endswith("\n"):
            line += "\n"
        if line not in have:
            out += line
            have.add(line)
    return out


def parse_checkpoint_body(body: str, extensions: bool = True) -> tuple[str, int, bytes]:
    """(origin, tree size, root hash) of a tlog-checkpoint body; extension lines are ignored, or refused."""
    lines = body.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise CheckpointError("checkpoint body needs origin, size and root hash lines")
    if not extensions and len(lines) != 4:
        raise CheckpointError(f"checkpoint body must have exactly 3 lines, has {len(lines) - 1}")
    origin, size_text, root_text = lines[0], lines[1], lines[2]
    check_key_name(origin)
    size = parse_decimal(size_text)
    if size is None:
        raise CheckpointError(f"checkpoint size {size_text!r} is not a decimal number")
    return origin, size, parse_hash(root_text, "checkpoint root", CheckpointError)


def split_at_blank_line(text: str, error: type[ValueError]) -> tuple[list[str], str]:
    """(the lines before the first empty line, the note after it) of a tlog-proof or add-checkpoint text."""
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise error("no empty line before the checkpoint")
    return head.split("\n"), note


def parse_hash_lines(lines: list[str], error: type[ValueError]) -> list[bytes]:
    """One base64 32-byte hash a line, at most 63 of them (a proof in a tree of up to 2^63 entries)."""
    if len(lines) > 63:
        raise error("more than 63 proof lines")
    return [parse_hash(line, "proof line", error) for line in lines]


def parse_hash(text: str, what: str, error: type[ValueError]) -> bytes:
    """A 32-byte hash in strict base64, or `error` naming `what`."""
    try:
        h = unb64(text)
    except ValueError as exc:
        raise error(f"{what}: {exc}") from None
    if len(h) != HASH_SIZE:
        raise error(f"{what} is not a 32-byte hash")
    return h
