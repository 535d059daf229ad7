"""The pages (SPEC §10): `/` and `/directory` for anyone, `/app` for consumers, `/merchant` for the counter,
`/regulator` for the desk; their static files; the session sign-in and sign-out exchanges; the API proxy.

Pages are rendered from what the JSON API answers to the signed-in party (called in process with its
token), so a page shows exactly what that party's token may read and nothing else. The one exception: the
regulator's pages read merchants' names through the repositories (`alerts.merchant_names`, `merchants.get`),
only once the API accepted the regulator's token, because the public directory no longer lists a merchant
that defaulted or closed, while its alerts and its page stay on the desk.
"""

from __future__ import annotations

import io
import secrets
from pathlib import Path

import httpx
import segno
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response

from service.alerts import repository as alerts
from service.http.common import read
from service.merchants import repository as merchants
from service.pages import web
from service.pages.web import api, api_json, render, session_token

router = APIRouter(include_in_schema=False)
STATIC = Path(__file__).resolve().parent / "static"
STATIC_FILES = {p.name: p for p in STATIC.iterdir() if p.is_file()} if STATIC.is_dir() else {}
TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".txt": "text/plain"}
CODE_RANK = {"green": 0, "yellow": 1, "red": 2}


def _redirect(to: str) -> Response:
    return web.secure_headers(RedirectResponse(to, status_code=303))


def _error_page(request: Request, portal: str | None, status: int, message_key: str) -> Response:
    return render(request, portal, "error.html", status=status, message=web.catalog(web.lang_of(request))[message_key])


def _idem() -> str:
    return secrets.token_hex(16)


def _error_message(r) -> str:
    try:
        return r.json()["error"]["message"]
    except Exception:
        return f"HTTP {r.status_code}"


async def _posted_form(request: Request, portal: str) -> tuple[dict, Response | None]:
    """The posted form, and the 403 page to answer instead when its CSRF token is not this browser's."""
    form = await web.form_of(request)
    if not web.csrf_ok(request, portal, form.get("csrf")):
        return form, _error_page(request, portal, 403, "csrf_failed")
    return form, None


async def _post(
    request: Request, portal: str, path: str, token: str | None, body: dict, ok: int, idempotency_key: str | None = None
) -> tuple[httpx.Response, Response | None]:
    """POST to the API for the page; (the API's answer, the error page to show instead unless it is `ok`)."""
    r = await api(request, "POST", path, token, json_body=body, idempotency_key=idempotency_key or _idem())
    if r.status_code != ok:
        return r, render(request, portal, "error.html", status=r.status_code, message=_error_message(r))
    return r, None


# ---- static files and the proxy ------------------------------------------------------------------


@router.get("/static/{name}")
async def static(name: str):
    path = STATIC_FILES.get(name)
    if path is None:
        return web.json_error(404, "not_found", "No such file.")
    response = FileResponse(path, media_type=TYPES.get(path.suffix, "application/octet-stream"))
    web.secure_headers(response)
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@router.api_route("/{portal}/api/v1/{rest:path}", methods=["GET", "POST", "PUT", "DELETE"])
async def api_proxy(portal: str, rest: str, request: Request):
    if portal not in web.PORTAL_COOKIES:
        return web.json_error(404, "not_found", "No such page.")
    return await web.proxy(request, portal, rest)


# ---- anyone -------------------------------------------------------------------------------------


async def _directory(request: Request, code: str | None = None, category: str | None = None) -> list[dict]:
    params = {"limit": 200}
    if code in CODE_RANK:
        params["code"] = code
    if category:
        params["category"] = category[:40]
    body = await api_json(request, "/v1/merchants", params=params, default={"items": []})
    return body["items"]


@router.get("/")
async def home(request: Request):
    checkpoint = await api_json(request, "/v1/ledger/checkpoint")
    key = await api_json(request, "/v1/ledger/public-key")
    return render(request, None, "home.html", checkpoint=checkpoint, key=key)


@router.get("/directory")
async def directory(request: Request):
    items = await _directory(request, request.query_params.get("code"))
    return render(request, None, "directory.html", merchants=items, code=request.query_params.get("code"))


@router.get("/directory/{merchant_id}")
async def merchant_public(merchant_id: str, request: Request):
    health = await api_json(request, f"/v1/merchants/{merchant_id}/health")
    if health is None:
        return _error_page(request, None, 404, "not_found")
    products = await api_json(
        request, "/v1/products", params={"merchant_id": merchant_id, "limit": 100}, default={"items": []}
    )
    name = next((m["name"] for m in await _directory(request) if m["id"] == merchant_id), merchant_id)
    return render(request, None, "merchant_public.html", health=health, products=products["items"], name=name)


# ---- consumers (/app) -----------------------------------------------------------------------------


async def _names(request: Request) -> dict[str, str]:
    return {m["id"]: m["name"] for m in await _directory(request)}


async def _consumer(request: Request) -> tuple[str, dict, None] | tuple[None, None, Response]:
    """(the session's token, the consumer it signs in, None), or else the sign-in page that comes back here."""
    token = session_token(request, "app")
    me = await api_json(request, "/v1/consumers/me", token) if token else None
    if token is None or me is None:
        return None, None, render(request, "app", "app_signin.html", next=request.url.path)
    return token, me, None


async def _my_cards(request: Request, token: str) -> list[dict]:
    return (await api_json(request, "/v1/consumers/me/cards", token, {"limit": 200}, {"items": []}))["items"]


@router.get("/app")
async def app_home(request: Request):
    token, me, signin = await _consumer(request)
    if signin:
        return signin
    cards = await _my_cards(request, token)
    confirmed = (
        await api_json(
            request, "/v1/consumers/me/redemptions", token, {"status": "confirmed", "limit": 200}, {"items": []}
        )
    )["items"]
    names = await _names(request)
    by_card = {c["id"]: c for c in cards}
    return render(
        request,
        "app",
        "app_home.html",
        me=me,
        cards=cards,
        names=names,
        by_card=by_card,
        receipts=list(reversed(confirmed))[:50],
    )


@router.post("/app/session")
async def app_signin(request: Request):
    """Phone + code (SPEC §8) for a session cookie: sign in, or register when a name is given."""
    if not web.csrf_ok(request, "app", request.headers.get("x-csrf-token")):
        return web.json_error(403, "csrf_failed", "Reload the page.")
    try:
        body = await request.json()
        phone, vid, code = str(body["phone"]), str(body["verification_id"]), str(body["code"])
        name = str(body.get("name") or "").strip()
    except Exception:
        return web.json_error(400, "invalid_body", "Give phone, verification_id and code.")
    if name:
        r = await api(
            request,
            "POST",
            "/v1/consumers",
            json_body={"name": name, "phone": phone, "verification_id": vid, "code": code},
        )
    else:
        r = await api(
            request, "POST", "/v1/consumers/sessions", json_body={"phone": phone, "verification_id": vid, "code": code}
        )
    if r.status_code != 201:
        if r.headers.get("content-type", "").startswith("application/json"):
            return web.secure_headers(JSONResponse(r.json(), r.status_code))  # the API's own error body
        return web.json_error(r.status_code, "sign_in_failed", "Sign-in failed.")
    response = web.secure_headers(JSONResponse({"signed_in": True}, 201))
    web.set_session(request, response, "app", r.json()["token"])
    return response


async def _signout(request: Request, portal: str, revoke: str | None) -> Response:
    _, refused = await _posted_form(request, portal)
    if refused:
        return refused
    token = session_token(request, portal)
    if token and revoke:
        await api(request, "DELETE", revoke, token)
    response = _redirect("/" + portal)
    web.clear_session(response, portal)
    return response


@router.post("/app/signout")
async def app_signout(request: Request):
    return await _signout(request, "app", "/v1/consumers/me/tokens/current")


@router.get("/app/r/{redemption_id}")
async def app_one_ask(redemption_id: str, request: Request):
    token, me, signin = await _consumer(request)
    if signin:
        return signin
    r = await api_json(request, f"/v1/redemptions/{redemption_id}", token)
    if r is None:
        return _error_page(request, "app", 404, "not_found")
    card = await api_json(request, f"/v1/cards/{r['card_id']}", token)
    names = await _names(request)
    return render(request, "app", "app_ask.html", me=me, r=r, card=card, names=names)


async def _card_for_refund(request: Request, card_id: str):
    token = session_token(request, "app")
    card = await api_json(request, f"/v1/cards/{card_id}", token) if token else None
    return token, card


@router.get("/app/cards/{card_id}/refund")
async def app_refund_page(card_id: str, request: Request):
    token, card = await _card_for_refund(request, card_id)
    if token is None:
        return render(request, "app", "app_signin.html", next=f"/app/cards/{card_id}/refund")
    if card is None:
        return _error_page(request, "app", 404, "not_found")
    quote = await api_json(request, f"/v1/cards/{card_id}/refund-quote", token)
    names = await _names(request)
    return render(request, "app", "app_refund.html", card=card, quote=quote, names=names)


@router.post("/app/cards/{card_id}/refund")
async def app_refund(card_id: str, request: Request):
    form, refused = await _posted_form(request, "app")
    token = session_token(request, "app")
    if refused or token is None:
        return refused or _redirect("/app")
    r, failed = await _post(request, "app", f"/v1/cards/{card_id}/refund", token, {}, 200, form.get("idempotency_key"))
    if failed:
        return failed
    rule = web.catalog(web.lang_of(request)).get("rule_" + r.json()["rule"], "")
    return render(request, "app", "app_refunded.html", refund=r.json(), t_rule=rule)


@router.get("/app/complaints")
async def app_complaints(request: Request):
    token, me, signin = await _consumer(request)
    if signin:
        return signin
    complaints = (await api_json(request, "/v1/complaints", token, {"limit": 100}, {"items": []}))["items"]
    cards = await _my_cards(request, token)
    names = await _names(request)
    merchants = sorted({c["merchant_id"] for c in cards})
    return render(
        request,
        "app",
        "app_complaints.html",
        complaints=complaints,
        merchants=merchants,
        names=names,
        categories=COMPLAINT_CATEGORIES,
        filed=request.query_params.get("filed"),
    )


COMPLAINT_CATEGORIES = (
    "service_quality",
    "refund_refused",
    "false_advertising",
    "closure_or_runaway",
    "price_or_terms",
    "other",
)


@router.post("/app/complaints")
async def app_file_complaint(request: Request):
    form, refused = await _posted_form(request, "app")
    token = session_token(request, "app")
    if refused or token is None:
        return refused or _redirect("/app")
    body = {field: form.get(field, "") for field in ("merchant_id", "category", "text")}
    _, failed = await _post(request, "app", "/v1/complaints", token, body, 201, form.get("idempotency_key"))
    return failed or _redirect("/app/complaints?filed=1")


@router.get("/app/cards/{card_id}/qr.svg")
async def app_card_qr(card_id: str, request: Request):
    """The card's QR code (its id), for the merchant's counter to scan."""
    token, card = await _card_for_refund(request, card_id)
    if card is None:
        return web.json_error(404, "card_not_found", "No such card.")
    return _svg(card["id"])


def _svg(text: str) -> Response:
    out = io.BytesIO()
    segno.make(text, error="m").save(
        out, kind="svg", scale=4, dark="#000", light="#fff", border=2, xmldecl=False, svgclass=None, lineclass=None
    )
    return web.secure_headers(Response(out.getvalue(), media_type="image/svg+xml"))


# ---- merchants (/merchant) ------------------------------------------------------------------------


async def _key_signin(request: Request, portal: str, check: str, roles: tuple[str, ...]) -> Response:
    form, refused = await _posted_form(request, portal)
    if refused:
        return refused
    key = form.get("api_key", "").strip()
    ok = False
    if key and len(key) <= 200:
        ok = (await api(request, "GET", check, key)).status_code == 200 and key[:3] in roles
    if not ok:
        return render(request, portal, "key_signin.html", status=401, failed=True)
    response = _redirect("/" + portal)
    web.set_session(request, response, portal, key)
    return response


@router.get("/merchant")
async def merchant_home(request: Request):
    token = session_token(request, "merchant")
    me = await api_json(request, "/v1/merchants/me", token) if token else None
    if me is None:
        return render(request, "merchant", "key_signin.html")
    stats = await api_json(request, "/v1/merchants/me/stats", token, default={})
    health = await api_json(request, f"/v1/merchants/{me['id']}/health", default=None)
    products = (
        await api_json(request, "/v1/products", params={"merchant_id": me["id"], "limit": 100}, default={"items": []})
    )["items"]
    cards = (await api_json(request, "/v1/merchants/me/cards", token, {"limit": 50}, {"items": []}))["items"]
    return render(
        request, "merchant", "merchant_home.html", me=me, stats=stats, health=health, products=products, cards=cards
    )


@router.post("/merchant/session")
async def merchant_signin(request: Request):
    return await _key_signin(request, "merchant", "/v1/merchants/me", ("mk_",))


@router.post("/merchant/signout")
async def merchant_signout(request: Request):
    return await _signout(request, "merchant", None)


@router.get("/merchant/qr/{redemption_id}.svg")
async def merchant_ask_qr(redemption_id: str, request: Request):
    """The ask's QR code: the deep link `/app/r/{id}` the consumer's phone opens."""
    token = session_token(request, "merchant")
    r = await api_json(request, f"/v1/redemptions/{redemption_id}", token) if token else None
    if r is None:
        return web.json_error(404, "redemption_not_found", "No such redemption.")
    return _svg(f"{request.base_url}app/r/{r['id']}")


# ---- regulators and the operator (/regulator) -----------------------------------------------------

REGULATOR_ROLES = ("rg_", "op_")


async def _regulator(request: Request) -> str | None:
    """The session's token if it is a regulator's (or the operator's): one the risk policy answers to."""
    token = session_token(request, "regulator")
    if not token or (await api(request, "GET", "/v1/risk/policy", token)).status_code != 200:
        return None
    return token


@router.get("/regulator")
async def regulator_home(request: Request):
    token = await _regulator(request)
    if token is None:
        return render(request, "regulator", "key_signin.html")
    code = request.query_params.get("code")
    category = request.query_params.get("category")
    merchants = await _directory(request, code, category)
    sort = request.query_params.get("sort", "code")
    if sort == "name":
        merchants.sort(key=lambda m: m["name"])
    elif sort == "category":
        merchants.sort(key=lambda m: (m["category"], CODE_RANK.get(m["code"], 3)))
    categories = sorted({m["category"] for m in await _directory(request)})
    filters = {"code": code, "category": category, "sort": sort}
    alert_names = await read(request.app.state.ctx, alerts.merchant_names)
    return render(
        request,
        "regulator",
        "regulator_home.html",
        merchants=merchants,
        categories=categories,
        alert_names=alert_names,
        **filters,
    )


@router.post("/regulator/session")
async def regulator_signin(request: Request):
    return await _key_signin(request, "regulator", "/v1/risk/policy", REGULATOR_ROLES)


@router.post("/regulator/signout")
async def regulator_signout(request: Request):
    return await _signout(request, "regulator", None)


async def _all_alerts(request: Request, token: str, merchant_id: str) -> list[dict]:
    found, after = [], None
    for _ in range(20):  # bounded: 10,000 alerts
        params = {"limit": 500, **({"after": after} if after is not None else {})}
        body = await api_json(request, "/v1/alerts", token, params, {"items": [], "next_cursor": None})
        found += [a for a in body["items"] if a["merchant_id"] == merchant_id]
        if not body["items"] or body.get("next_cursor") in (None, after):
            break
        after = body["next_cursor"]
    return found


@router.get("/regulator/merchants/{merchant_id}")
async def regulator_merchant(merchant_id: str, request: Request):
    token = await _regulator(request)
    if token is None:
        return render(request, "regulator", "key_signin.html")
    health = await api_json(request, f"/v1/merchants/{merchant_id}/health")
    if health is None:
        return _error_page(request, "regulator", 404, "not_found")
    complaints = (
        await api_json(request, "/v1/complaints", token, {"merchant_id": merchant_id, "limit": 100}, {"items": []})
    )["items"]
    history = await _all_alerts(request, token, merchant_id)
    merchant = await read(request.app.state.ctx, merchants.get, merchant_id)  # listed or not: the desk names it
    return render(
        request,
        "regulator",
        "regulator_merchant.html",
        health=health,
        complaints=complaints,
        history=history,
        name=merchant.name if merchant is not None else merchant_id,
        done=request.query_params.get("done"),
    )


ACTIONS = {
    "default": "/default",
    "abnormal": "/abnormal-list",
    "delist": "/delisting",
    "relist": "/delisting",
    "unabnormal": "/abnormal-list",
}


@router.post("/regulator/merchants/{merchant_id}/{action}")
async def regulator_act(merchant_id: str, action: str, request: Request):
    """Declare default, set or lift the abnormal list or a delisting: each with a reason and a confirmation."""
    form, refused = await _posted_form(request, "regulator")
    if refused:
        return refused
    token = session_token(request, "regulator")
    if token is None or action not in ACTIONS:
        return _error_page(request, "regulator", 404, "not_found")
    reason = form.get("reason", "").strip()
    if not reason or form.get("confirm") != "yes":
        return _error_page(request, "regulator", 422, "reason_and_confirm")
    if action == "default":
        body = {"reason": reason}
    else:
        body = {"listed": action in ("abnormal", "delist"), "reason": reason}
    _, failed = await _post(request, "regulator", f"/v1/merchants/{merchant_id}{ACTIONS[action]}", token, body, 200)
    return failed or _redirect(f"/regulator/merchants/{merchant_id}?done={action}")


@router.post("/regulator/draws")
async def regulator_draw(request: Request):
    form, refused = await _posted_form(request, "regulator")
    if refused:
        return refused
    token = session_token(request, "regulator")
    inspectors = [s.strip() for s in form.get("inspectors", "").replace("，", ",").split(",") if s.strip()]
    body = {"inspectors": inspectors}
    if form.get("seed", "").strip():
        body["seed"] = form["seed"].strip()
    r, failed = await _post(request, "regulator", "/v1/inspections/draws", token, body, 201)
    if failed:
        return failed
    names = await _names(request)
    return render(request, "regulator", "regulator_draw.html", draw=r.json(), names=names)
