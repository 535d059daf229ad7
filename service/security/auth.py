"""Bearer tokens and roles (SPEC §1). Tokens are stored only as SHA-256 hashes.

A token is looked up by its hash (an index lookup reveals nothing about other tokens) and the
operator's is compared in constant time. `require(...)` makes a dependency that admits some roles.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from functools import lru_cache

from fastapi import Depends, Request

from service.core.ids import token_hash
from service.http.context import AppContext, get_ctx
from service.http.errors import Forbidden, Unauthorized
from service.keys_api.repository import token_row
from service.security.revocation import watch_of

ROLES = ("operator", "merchant", "consumer", "regulator", "auditor", "lender")
PREFIX_ROLE = {"op": "operator", "mk": "merchant", "cs": "consumer", "rg": "regulator", "au": "auditor", "ln": "lender"}


@dataclass(frozen=True)
class Principal:
    role: str
    party_id: str

    @property
    def caller(self) -> str:
        return self.party_id


async def authenticate(request: Request, ctx: AppContext) -> Principal | None:
    return await authenticate_header(request.headers.get("authorization"), ctx)


async def authenticate_header(header: str | None, ctx: AppContext) -> Principal | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 200:
        raise Unauthorized("The Authorization header must be 'Bearer <token>'.", "bad_token")
    digest = token_hash(token)
    if hmac.compare_digest(digest, _operator_digest(ctx.keys.operator_token)):
        return Principal("operator", "operator")
    watch = watch_of(ctx)
    epoch = await watch.current()  # read after this request arrived: a revocation anywhere is seen
    if epoch != watch.seen:
        ctx.token_cache.clear()
        watch.seen = epoch
    cached = ctx.token_cache.get(digest)
    if cached is None:
        async with ctx.engines.reader.connect() as conn:
            row = await token_row(conn, digest)
        if row is None or not hmac.compare_digest(PREFIX_ROLE.get(token[:2], ""), row.role):
            raise Unauthorized("The token is not valid.", "bad_token")
        cached = (Principal(row.role, row.party_id), row.expires_at)
        if epoch == watch.seen:  # not if a revocation landed while this row was read
            if len(ctx.token_cache) > 100_000:
                ctx.token_cache.clear()
            ctx.token_cache[digest] = cached
    principal, expires_at = cached
    if expires_at is not None and expires_at <= ctx.clock.now():
        raise Unauthorized("The token is not valid.", "bad_token")
    return principal


@lru_cache(maxsize=4)
def _operator_digest(token: str) -> str:
    """The operator token's hash, computed once per token rather than on every request."""
    return token_hash(token)


def check_role(principal: Principal | None, roles: tuple[str, ...]) -> Principal:
    if principal is None:
        raise Unauthorized("This call needs 'Authorization: Bearer <token>'.", "missing_token")
    if principal.role not in roles:
        article = "An" if principal.role[0] in "aeiou" else "A"
        raise Forbidden(f"{article} {principal.role} may not do this.", "role_not_allowed")
    return principal


def require(*roles: str):
    async def dependency(request: Request, ctx: AppContext = Depends(get_ctx)) -> Principal:
        return check_role(await authenticate(request, ctx), roles)

    dependency.__name__ = "require_" + "_".join(roles)
    return dependency
