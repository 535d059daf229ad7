"""A client generated with openapi-python-client from the live /openapi.json drives the service with typed
models: a merchant onboarded and its product published, a consumer registered with a phone code, then the
first story (buy → ask → confirm → refund), every answer read by attribute, amounts in fen."""

from __future__ import annotations

import asyncio
import importlib
import json
import pkgutil
import secrets
import subprocess
import sys
from types import ModuleType

import httpx

from api_tests.conftest import OPERATOR_TOKEN
from api_tests.factories import random_phone, valid_uscc
from service.app import asgi_app

PACKAGE = "escrow_generated_client"
BASE_URL = "http://escrow.test"
_generated: dict[str, ModuleType] = {}


async def generated_client(client, tmp_path_factory) -> ModuleType:
    """The client package generated from the document the app serves (once per test module)."""
    if PACKAGE in _generated:
        return _generated[PACKAGE]
    r = await client.get("/openapi.json")
    assert r.status_code == 200, r.text
    folder = tmp_path_factory.mktemp("generated")
    spec = folder / "openapi.json"
    spec.write_text(json.dumps(r.json()))
    command = [sys.executable, "-m", "openapi_python_client", "generate", "--path", str(spec)]
    command += ["--output-path", str(folder / PACKAGE), "--meta", "none"]
    run = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    sys.path.insert(0, str(folder))
    _generated[PACKAGE] = importlib.import_module(PACKAGE)
    importlib.import_module(f"{PACKAGE}.models")  # `package.models` from here on
    return _generated[PACKAGE]


def endpoint(package: ModuleType, operation_id: str) -> ModuleType:
    """The generated module of an operation (its name is the operation id, whatever its tag)."""
    api = importlib.import_module(f"{package.__name__}.api")
    for info in pkgutil.walk_packages(api.__path__, f"{api.__name__}."):
        if info.name.rsplit(".", 1)[-1] == operation_id:
            return importlib.import_module(info.name)
    raise AssertionError(f"no generated function for the operation {operation_id!r}")


class Party:
    """A generated `Client` whose requests reach the app in-process (as the tests' httpx client does), each
    party from its own address (the registration limit is per address)."""

    def __init__(self, package: ModuleType, app, token: str | None, address: str):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        transport = httpx.ASGITransport(app=asgi_app(app), client=(address, 50000))
        self.http = httpx.AsyncClient(transport=transport, base_url=BASE_URL, headers=headers)
        self.client = package.Client(base_url=BASE_URL).set_async_httpx_client(self.http)
        self.package = package

    async def call(self, operation_id: str, expect: int, **arguments):
        """The operation's typed answer, after checking its status."""
        answer = await endpoint(self.package, operation_id).asyncio_detailed(client=self.client, **arguments)
        assert answer.status_code == expect, answer.content
        return answer.parsed


async def onboard_and_register(package, app) -> tuple[Party, Party, object, Party]:
    """Operator, merchant, the merchant's published product, consumer: all through the generated client."""
    models = package.models
    operator = Party(package, app, OPERATOR_TOKEN, "10.9.6.1")
    body = models.MerchantCreate(name="Iron Gym 铁馆健身", uscc=valid_uscc(), category="fitness")
    onboarded = await operator.call("onboard_merchant", 201, body=body)
    assert isinstance(onboarded, models.OnboardedMerchant) and onboarded.api_key
    merchant = Party(package, app, onboarded.api_key, "10.9.6.2")
    profile = await merchant.call("my_merchant_profile", 200)
    assert isinstance(profile, models.Merchant)
    assert (profile.id, profile.status, profile.delisted) == (onboarded.id, "active", False)

    body = models.ProductCreate(
        type_=models.ProductCreateType.STORED_VALUE,
        name="充1000送200",
        price=100_000,
        face_value=120_000,
        valid_days=365,
    )
    product = await merchant.call("publish_product", 201, body=body)
    assert isinstance(product, models.Product)
    assert (product.price, product.face_value, product.list_price, product.on_sale) == (100_000, 120_000, 1, True)
    listed = await operator.call("list_products", 200, merchant_id=onboarded.id)
    assert isinstance(listed, models.ProductPage) and [p.id for p in listed.items] == [product.id]
    missing = await operator.call("get_product", 404, product_id="prod_missing")
    assert isinstance(missing, models.ErrorBody) and missing.error.code == "product_not_found"

    phone = random_phone()
    anyone = Party(package, app, None, "10.9.6.3")
    started = await anyone.call("start_verification", 202, body=models.VerificationCreate(phone=phone))
    assert isinstance(started, models.VerificationStarted)
    outbox = await operator.call("read_sms_outbox", 200, phone=phone)
    assert isinstance(outbox, models.SmsOutbox) and len(outbox.items[-1].code) == 6
    body = models.ConsumerCreate(
        name="Li Lei 李雷", phone=phone, verification_id=started.verification_id, code=outbox.items[-1].code
    )
    registered = await anyone.call("register_consumer", 201, body=body)
    assert isinstance(registered, models.RegisteredConsumer) and registered.token
    consumer = Party(package, app, registered.token, "10.9.6.4")
    me = await consumer.call("my_consumer_profile", 200)
    assert isinstance(me, models.Consumer) and me.id == registered.id and me.phone_hint != phone

    health = await operator.call("merchant_health", 200, merchant_id=onboarded.id)
    assert isinstance(health, models.HealthCode) and health.code == "green" and health.warning is None
    return operator, merchant, product, consumer


async def test_the_generated_client_types_merchants_products_consumers_and_health(client, app, tmp_path_factory):
    package = await generated_client(client, tmp_path_factory)
    operator, merchant, _, consumer = await onboard_and_register(package, app)
    stats = await merchant.call("my_stats", 200)
    assert isinstance(stats, package.models.MerchantStats)
    assert (stats.issued, stats.outstanding, stats.cards_by_status.additional_properties["active"]) == (0, 0, 0)
    for party in (operator, merchant, consumer):
        await party.http.aclose()


async def test_the_generated_client_runs_buy_ask_confirm_refund(client, app, tmp_path_factory):
    package = await generated_client(client, tmp_path_factory)
    models = package.models
    operator, merchant, product, consumer = await onboard_and_register(package, app)

    payment = models.Payment(method=models.PaymentMethod.WECHAT_PAY, reference=f"wx-{secrets.token_hex(12)}")
    card = await consumer.call("buy_card", 201, body=models.CardPurchase(product_id=product.id, payment=payment))
    assert isinstance(card, models.PurchasedCard)
    assert (card.price, card.balance.escrow, card.balance.held, card.balance.units_total) == (
        100_000,
        100_000,
        0,
        120_000,
    )

    asked = await merchant.call("ask_redemption", 201, card_id=card.id, body=models.RedemptionAsk(amount=12_000))
    assert isinstance(asked, models.AskedRedemption) and asked.status == "pending"
    assert asked.hold_amount == 10_000  # 12,000 face fen of a card sold at 100,000 for 120,000

    # An optional body must be given (the generator would serialise its UNSET marker): an empty one.
    confirmed = await consumer.call("confirm", 200, redemption_id=asked.id, body=models.EmptyBody())
    assert isinstance(confirmed, models.ConfirmedRedemption)
    assert (confirmed.status, confirmed.release_amount, confirmed.card_balance.escrow) == ("confirmed", 10_000, 90_000)
    assert isinstance(confirmed.ledger_seq, int)

    seen = await consumer.call("get_card", 200, card_id=card.id)
    assert isinstance(seen, models.Card)
    assert (seen.balance.escrow, seen.balance.released, seen.balance.units_left) == (90_000, 10_000, 108_000)

    refund = await consumer.call("refund", 200, card_id=card.id, body=models.EmptyBody())
    assert isinstance(refund, models.Refund) and refund.rule == "consumer_quit"
    assert refund.amount + refund.merchant_share == 90_000
    after = await consumer.call("get_card", 200, card_id=card.id)
    assert (after.status, after.balance.escrow, after.balance.refunded) == ("refunded", 0, refund.amount)
    for party in (operator, merchant, consumer):
        await party.http.aclose()
