"""Phone verifications (实名手机号, SPEC §8): one-time codes, their limits, and proving a phone with one.

A verification is created for any well-formed phone without looking at whether it is registered
(the answer and the work are the same either way: no enumeration). Its 6-digit code is kept only as
an HMAC bound to the verification id, compared in constant time; it is valid for 5 minutes, for
one use, and five wrong codes burn it. Per phone, at most `ESCROW_CODES_PER_PHONE_PER_HOUR` codes
are sent an hour; per client address the shared limit of `service.http.client_address` applies.

Checking a code is a write (a miss counts, a success spends the verification), so `check_code`
returns the outcome instead of raising: the miss must be committed even though the answer is an
error.
"""

from __future__ import annotations

import hmac
import secrets
from datetime import timedelta

from service.consumers import repository
from service.core.clock import iso
from service.core.ids import new_id
from service.db.writer import Tx
from service.http.errors import Conflict, EscrowError, TooManyRequests, Unprocessable, error_answer, error_body

CODE_TTL = timedelta(minutes=5)
MAX_ATTEMPTS = 5


def new_code() -> str:
    return f"{secrets.randbelow(10**6):06d}"


def code_hash(vault, verification_id: str, code: str) -> str:
    # keyed by the phone vault's lookup key: a database dump alone does not let anyone try all 10^6 codes offline
    return vault.lookup(f"code:{verification_id}:{code}")


def refusal(exc: EscrowError) -> tuple[int, dict]:
    """The answer `exc` gives, returned instead of raised: a write proved by a code commits its miss."""
    status, code, message = error_answer(exc)
    return status, error_body(code, message)


def _used() -> tuple[int, dict]:
    return refusal(Conflict("This verification was already used; ask for a new code.", "verification_used"))


def _burned() -> tuple[int, dict]:
    return refusal(Conflict("Too many wrong codes; ask for a new code.", "verification_burned"))


async def count_address(tx: Tx, bucket: str, per_minute: int) -> None:
    """Count one attempt from this address in the shared table; over the limit raises (and writes nothing)."""
    window = tx.now.replace(second=0, microsecond=0)
    key = f"anon:{bucket}"[:120]
    row = await repository.limit_window(tx.conn, key)
    if row is None:
        await repository.start_limit(tx.conn, key, window)
    elif row.window_start < window:
        await repository.set_limit(tx.conn, key, count=1, window_start=window)
    elif row.count >= per_minute:
        raise TooManyRequests(
            f"Too many attempts from this address; the limit is {per_minute} a minute.", "rate_limited"
        )
    else:
        await repository.set_limit(tx.conn, key, count=row.count + 1)


async def start(tx: Tx, vault, sender, phone: str, per_hour: int) -> tuple[dict, str]:
    """Create a verification for `phone` (already normalised) → (answer, code)."""
    lookup = vault.lookup(phone)
    if await repository.codes_sent_since(tx.conn, lookup, tx.now - timedelta(hours=1)) >= per_hour:
        raise TooManyRequests(f"Too many codes for this phone; at most {per_hour} an hour.", "too_many_codes")
    vid = new_id("vrf")
    code = new_code()
    expires_at = tx.now + CODE_TTL
    await repository.add_verification(
        tx.conn,
        id=vid,
        phone_lookup=lookup,
        code_hash=code_hash(vault, vid, code),
        created_at=tx.now,
        expires_at=expires_at,
    )
    await sender.store(tx, vault, phone, lookup, code)
    return {"verification_id": vid, "expires_at": iso(expires_at)}, code


async def check_code(tx: Tx, vault, verification_id: str, phone: str, code: str) -> tuple[int, dict] | None:
    """Spend the verification if `code` is right for it and `phone`; else the error answer (a miss is counted)."""
    row = await repository.verification(tx.conn, verification_id)
    wrong = refusal(Unprocessable("The code is not right for this verification and phone.", "invalid_code"))
    if row is None:
        return wrong
    if row.used_at is not None:
        return _used()
    if row.attempts >= MAX_ATTEMPTS:
        return _burned()
    if row.expires_at <= tx.now:
        return refusal(Conflict("The code has expired; ask for a new one.", "verification_expired"))
    right_phone = hmac.compare_digest(row.phone_lookup, vault.lookup(phone))
    right_code = hmac.compare_digest(row.code_hash, code_hash(vault, verification_id, code))
    if not (right_phone and right_code):
        attempts = row.attempts + 1
        await repository.set_attempts(tx.conn, verification_id, attempts)
        return _burned() if attempts >= MAX_ATTEMPTS else wrong
    if not await repository.spend(tx.conn, verification_id, tx.now):
        return _used()
    return None
