"""Unified social credit code (统一社会信用代码) check, GB 32100-2015."""

from __future__ import annotations

import re

ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"  # 31 characters: no I, O, S, V, Z
WEIGHTS = [pow(3, i, 31) for i in range(17)]
_SHAPE = re.compile(r"^[0-9A-HJ-NP-RTUW-Y]{2}[0-9]{6}[0-9A-HJ-NP-RTUW-Y]{10}$")


def check_character(first17: str) -> str:
    total = sum(ALPHABET.index(c) * w for c, w in zip(first17, WEIGHTS))
    return ALPHABET[(31 - total % 31) % 31]


def uscc_problem(code: str) -> str | None:
    """None if the code is valid, else why not (a sentence for a person)."""
    if not isinstance(code, str) or len(code) != 18:
        return "a unified social credit code has exactly 18 characters"
    if not _SHAPE.match(code):
        return "a unified social credit code uses digits and upper-case letters other than I, O, S, V and Z, with a 6-digit division code in positions 3-8"
    if check_character(code[:17]) != code[17]:
        return "the check character (position 18) does not match GB 32100-2015"
    return None
