"""What every page shares: language and message catalogs, money as yuan, templates, security headers,
session cookies and CSRF tokens, and the in-process call to the JSON API.

A session cookie carries the party's own API token (HttpOnly, SameSite=Strict, Secure in production), so
a page never holds a credential in JavaScript-readable storage. The page's JavaScript reaches the JSON
API through `/{portal}/api/v1/...`, which adds `Authorization: Bearer` from the cookie; the API itself,
its authorization and its scoping are unchanged (one party's objects stay 404 to another). Every request
that changes anything carries a CSRF token: HMAC(server key, session credential), sent back in the
`X-CSRF-Token` header by scripts or in a hidden `csrf` field by forms. Before sign-in the credential is a
random pre-session cookie, so the sign-in forms are protected too.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from urllib.parse import parse_qs

import httpx
from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from service.http.errors import error_response

HERE = Path(__file__).resolve().parent
LANGS = ("zh", "en")
LANG_COOKIE = "lang"
PRE_COOKIE = "esc_pre"
PORTAL_COOKIES = {"app": "esc_app", "merchant": "esc_merchant", "regulator": "esc_regulator"}
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; media-src 'self' blob:"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "Permissions-Policy": "camera=(self), microphone=(), geolocation=()",
}


@lru_cache
def catalog(lang: str) -> dict[str, str]:
    return json.loads((HERE / "i18n" / f"{lang}.json").read_text(encoding="utf-8"))


def yuan(fen) -> str:
    """Integer fen as `¥1,000.00` with integer arithmetic only (negative amounts keep their sign)."""
    if fen is None:
        return ""
    fen = int(fen)
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(fen), 100)
    return f"{sign}¥{whole:,}.{cents:02d}"


LOCAL = timezone(timedelta(hours=8))  # the people using the pages live in China (UTC+8 all year)


def when(iso: str | None) -> str:
    """An API time (UTC) as people there read it: `2026-12-01 16:30 (UTC+8)`."""
    if not iso:
        return ""
    try:
        t = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(LOCAL)
    except ValueError:
        return iso
    return t.strftime("%Y-%m-%d %H:%M") + " (UTC+8)"


def indicator(value, name: str) -> str:
    """An indicator as people read it: money in yuan, basis points as a percentage (integer arithmetic)."""
    if not isinstance(value, int) or isinstance(value, bool):
        return str(value)
    if name.endswith("_bp"):
        whole, frac = divmod(value, 100)
        return f"{whole}.{frac:02d}%"
    if name.endswith(("_issued", "_released", "_refunded")) or name == "escrow_outstanding":
        return yuan(value)
    return str(value)


def _env() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
    env.filters["yuan"] = yuan
    env.filters["when"] = when
    env.filters["indicator"] = indicator
    return env


ENV = _env()


def lang_of(request: Request) -> str:
    asked = request.query_params.get("lang")
    if asked in LANGS:
        return asked
    kept = request.cookies.get(LANG_COOKIE)
    return kept if kept in LANGS else "zh"


def secure_cookies(request: Request) -> bool:
    return request.app.state.ctx.settings.env == "production"


def csrf_key(request: Request) -> bytes:
    ctx = request.app.state.ctx
    return hashlib.sha256(b"escrow pages csrf\0" + ctx.keys.operator_token.encode()).digest()


def csrf_for(request: Request, credential: str) -> str:
    return hmac.new(csrf_key(request), credential.encode(), hashlib.sha256).hexdigest()


def session_token(request: Request, portal: str) -> str | None:
    token = request.cookies.get(PORTAL_COOKIES[portal])
    return token if token and len(token) <= 200 else None


def credential(request: Request, portal: str) -> str | None:
    """What the CSRF token is bound to: the session, or before sign-in the pre-session cookie."""
    return session_token(request, portal) or request.cookies.get(PRE_COOKIE)


def csrf_ok(request: Request, portal: str, given: str | None) -> bool:
    cred = credential(request, portal)
    if not cred or not given:
        return False
    origin = request.headers.get("origin")
    if origin and origin not in ("null",) and origin.split("://", 1)[-1] != request.headers.get("host", ""):
        return False
    return hmac.compare_digest(csrf_for(request, cred), given)


def render(request: Request, portal: str | None, template: str, status: int = 200, **values) -> HTMLResponse:
    lang = lang_of(request)
    t = catalog(lang)
    pre = None
    cred = credential(request, portal) if portal else request.cookies.get(PRE_COOKIE)
    if not cred:
        pre = cred = secrets.token_urlsafe(24)
    html = ENV.get_template(template).render(
        t=t,
        lang=lang,
        other_lang="en" if lang == "zh" else "zh",
        portal=portal,
        csrf=csrf_for(request, cred),
        path=request.url.path,
        **values,
    )
    response = HTMLResponse(html, status_code=status)
    secure_headers(response)
    if pre:
        response.set_cookie(PRE_COOKIE, pre, httponly=True, samesite="strict", secure=secure_cookies(request), path="/")
    if request.query_params.get("lang") in LANGS:
        response.set_cookie(
            LANG_COOKIE,
            lang,
            max_age=365 * 86400,
            httponly=True,
            samesite="strict",
            secure=secure_cookies(request),
            path="/",
        )
    return response


def secure_headers(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


def json_error(status: int, code: str, message: str) -> Response:
    """A JSON error answer of the pages: the API's one error body (`errors.error_body`), the pages' headers."""
    return secure_headers(error_response(status, code, message))


def set_session(request: Request, response: Response, portal: str, token: str) -> None:
    response.set_cookie(
        PORTAL_COOKIES[portal],
        token,
        httponly=True,
        samesite="strict",
        secure=secure_cookies(request),
        path="/",
        max_age=30 * 86400,
    )


def clear_session(response: Response, portal: str) -> None:
    response.delete_cookie(PORTAL_COOKIES[portal], path="/")


async def form_of(request: Request) -> dict[str, str]:
    """An urlencoded form body as {name: first value} (bounded by the app's body limit)."""
    raw = (await request.body()).decode("utf-8", errors="replace")
    return {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}


def api_client(request: Request) -> httpx.AsyncClient:
    """An in-process client of this same app, as the browser's own address (limits stay per address)."""
    from service.app import asgi_app  # the app module imports this package

    app = request.app
    served = getattr(app.state, "pages_asgi", None)
    if served is None:
        served = app.state.pages_asgi = asgi_app(app)
    peer = (request.client.host, request.client.port) if request.client else ("127.0.0.1", 1)
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=served, client=peer), base_url="http://pages.internal", timeout=90
    )


async def api(
    request: Request,
    method: str,
    path: str,
    token: str | None = None,
    json_body=None,
    params: dict | None = None,
    idempotency_key: str | None = None,
) -> httpx.Response:
    headers = {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    async with api_client(request) as client:
        return await client.request(method, path, json=json_body, params=params, headers=headers)


async def api_json(request: Request, path: str, token: str | None = None, params: dict | None = None, default=None):
    r = await api(request, "GET", path, token, params=params)
    return r.json() if r.status_code == 200 else default


FORWARDED = ("content-type", "idempotency-key")


async def proxy(request: Request, portal: str, rest: str) -> Response:
    """Forward `/{portal}/api/v1/...` to `/v1/...` with the session's token; unsafe methods need the CSRF token."""
    if request.method in UNSAFE and not csrf_ok(request, portal, request.headers.get("x-csrf-token")):
        return json_error(403, "csrf_failed", "The page's CSRF token is missing or wrong: reload the page.")
    headers = {k: v for k, v in request.headers.items() if k in FORWARDED}
    token = session_token(request, portal)
    if token:
        headers["authorization"] = f"Bearer {token}"
    body = await request.body()
    async with api_client(request) as client:
        r = await client.request(
            request.method,
            "/v1/" + rest,
            params=list(request.query_params.multi_items()),
            content=body or None,
            headers=headers,
        )
    out = Response(r.content, status_code=r.status_code, media_type=r.headers.get("content-type"))
    return secure_headers(out)
