"""The tables. Alembic creates them (migrations/); the app never does.

The database itself refuses what must never happen: negative or over-committed balances, a card
whose parts do not add up to its price, a reused idempotency key, a duplicate ledger sequence.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, Column, DateTime, Index, Integer, LargeBinary, MetaData, Text, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata: MetaData = SQLModel.metadata


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes on both databases (SQLite keeps no zone: store naive UTC, read back aware)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_SQLITE = sqlite.dialect()
# How a UTCDateTime is stored on SQLite and read back, as functions, for code that talks to the driver
# itself (service/db/raw.py, benchmarks): SQLAlchemy's own processors, so the two cannot drift. SQLite
# compares times as text: a hold expires at the right moment only if every writer writes this text.
sqlite_text: Callable[[datetime | None], str | None] = UTCDateTime().dialect_impl(_SQLITE).bind_processor(_SQLITE)  # type: ignore[assignment]
from_sqlite_text: Callable[[str | None], datetime | None] = (
    UTCDateTime().dialect_impl(_SQLITE).result_processor(_SQLITE, None)
)  # type: ignore[assignment]


def ts(nullable: bool = False, **kw) -> object:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable, **kw))


def money(**kw) -> object:
    """An integer fen column: BigInteger, never NULL unless asked."""
    nullable = kw.pop("nullable", False)
    return Field(sa_column=Column(BigInteger, nullable=nullable, **kw))


# Columns several tables share, as mixins. A mixin's fields name a type (`sa_type`), never a Column
# object (`sa_column`): one Column cannot belong to two tables.


def _ts_type(nullable: bool = False) -> Any:
    return Field(default=None, sa_type=UTCDateTime, nullable=nullable)


def positive(column: str, name: str | None = None) -> CheckConstraint:
    """The CHECK that a column is above zero, named `<column>_positive` unless told otherwise."""
    return CheckConstraint(f"{column} > 0", name=name or f"{column}_positive")


def party_feeds(prefix: str, *parties: str, order: str = "id") -> tuple[Index, ...]:
    """One index per party whose feed pages through the table in `order`: `ix_<prefix>_<party>` on
    (`<party>_id`, order); every `GET …?after=` of a party's rows rides one of them."""
    return tuple(Index(f"ix_{prefix}_{party}", f"{party}_id", order) for party in parties)


def _money() -> Any:
    return Field(sa_type=BigInteger, nullable=False)


def _counter() -> Any:
    return Field(default=0, sa_type=BigInteger, nullable=False)


class NamedParty(SQLModel):
    """A party known by id and name (regulators, auditors, lenders)."""

    id: str = Field(primary_key=True, max_length=40)
    name: str = Field(max_length=200)
    created_at: datetime = _ts_type()


class RiskCounters(SQLModel):
    """What the health code counts per merchant (SPEC §3): per day (MerchantDaily) and all-time (MerchantHealth)."""

    issued: int = _counter()
    released: int = _counter()
    refunded: int = _counter()
    cards_sold: int = _counter()
    redemptions_asked: int = _counter()
    redemptions_rejected: int = _counter()
    complaints: int = _counter()


class ApiToken(SQLModel, table=True):
    __tablename__ = "api_tokens"
    token_hash: str = Field(primary_key=True, max_length=64)
    role: str = Field(max_length=16)
    party_id: str = Field(max_length=40, index=True)
    created_at: datetime = ts()
    expires_at: datetime | None = ts(nullable=True)  # a rotated key's grace end; NULL: until revoked


class Merchant(SQLModel, table=True):
    __tablename__ = "merchants"
    id: str = Field(primary_key=True, max_length=40)
    name: str = Field(max_length=200)
    uscc: str = Field(max_length=18, unique=True)
    category: str = Field(max_length=40, index=True)
    status: str = Field(default="active", max_length=16)  # active, closing, closed, defaulted
    abnormal: bool = False
    delisted: bool = False
    warned_at: datetime | None = ts(nullable=True)
    closure_date: datetime | None = ts(nullable=True)
    closure_reason: str | None = Field(default=None, max_length=500)
    default_reason: str | None = Field(default=None, max_length=500)
    created_at: datetime = ts()


class Regulator(NamedParty, table=True):
    __tablename__ = "regulators"


class Auditor(NamedParty, table=True):
    __tablename__ = "auditors"


class Consumer(SQLModel, table=True):
    __tablename__ = "consumers"
    id: str = Field(primary_key=True, max_length=40)
    name: str = Field(max_length=200)
    phone_ciphertext: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    phone_lookup: str = Field(max_length=64, unique=True)  # keyed hash: find by phone without decrypting
    phone_hint: str = Field(max_length=16)  # masked, e.g. 138****5678
    created_at: datetime = ts()


class SaleTerms(SQLModel):
    """The terms a product is sold on, which a card keeps as they were at purchase (a later change of the
    product never changes a card already sold)."""

    type: str = Field(max_length=16)  # stored_value, count, period
    price: int = _money()  # what the consumer pays, fen
    currency: str = Field(default="CNY", max_length=3)
    list_price: int = _money()  # the price before the card's bonus, fen
    units_total: int = _money()  # fen of value, uses or periods the card gives
    period_days: int | None = None


class Product(SaleTerms, table=True):
    __tablename__ = "products"
    __table_args__ = (positive("price"), positive("units_total", name="units_positive"), positive("list_price"))
    id: str = Field(primary_key=True, max_length=40)
    merchant_id: str = Field(foreign_key="merchants.id", max_length=40, index=True)
    name: str = Field(max_length=200)
    face_value: int | None = money(nullable=True)
    uses: int | None = None
    bonus_uses: int | None = None
    periods: int | None = None
    valid_days: int
    on_sale: bool = True
    created_at: datetime = ts()


class Card(SaleTerms, table=True):
    __tablename__ = "cards"
    __table_args__ = (
        positive("price"),
        CheckConstraint("escrow >= 0", name="escrow_nonnegative"),
        CheckConstraint("held >= 0 AND held <= escrow", name="held_within_escrow"),
        CheckConstraint("released >= 0 AND refunded >= 0", name="outflows_nonnegative"),
        CheckConstraint("escrow + released + refunded = price", name="price_conserved"),
        CheckConstraint(
            "units_used >= 0 AND units_held >= 0 AND units_used + units_held <= units_total", name="units_within_total"
        ),
        *party_feeds("cards", "consumer", "merchant"),
        Index("ix_cards_expiry", "status", "expires_at"),
        # A payment reference funds one card only (SPEC §12): the same method and reference twice is a 409.
        Index("uq_cards_payment", "payment_method", "payment_reference", unique=True),
    )
    id: str = Field(primary_key=True, max_length=40)
    product_id: str = Field(foreign_key="products.id", max_length=40)
    merchant_id: str = Field(foreign_key="merchants.id", max_length=40)
    consumer_id: str = Field(foreign_key="consumers.id", max_length=40)
    status: str = Field(max_length=16)  # active, exhausted, refunded
    units_used: int = money(default=0)
    units_held: int = money(default=0)
    escrow: int = money()
    held: int = money(default=0)
    released: int = money(default=0)
    refunded: int = money(default=0)
    payment_method: str = Field(max_length=32)
    payment_reference: str = Field(max_length=128)
    purchased_at: datetime = ts()
    expires_at: datetime = ts()
    cooling_off_ends_at: datetime = ts()
    refund_rule: str | None = Field(default=None, max_length=32)
    ended_at: datetime | None = ts(nullable=True)
    purchase_seq: int = Field(sa_column=Column(BigInteger, nullable=False))


PENDING = text("status = 'pending'")  # the partial indexes over pending redemptions


class Redemption(SQLModel, table=True):
    __tablename__ = "redemptions"
    __table_args__ = (
        positive("units"),
        CheckConstraint("hold_amount >= 0", name="hold_nonnegative"),
        # (migration 0005) status only in partial indexes: a confirm moves no entry of a large index
        Index("ix_redemptions_consumer", "consumer_id", "id"),
        Index("ix_redemptions_consumer_pending", "consumer_id", "id", sqlite_where=PENDING, postgresql_where=PENDING),
        Index("ix_redemptions_card_pending", "card_id", "expires_at", sqlite_where=PENDING, postgresql_where=PENDING),
        Index("ix_redemptions_pending_expiry", "expires_at", sqlite_where=PENDING, postgresql_where=PENDING),
    )
    id: str = Field(primary_key=True, max_length=40)
    card_id: str = Field(foreign_key="cards.id", max_length=40)
    merchant_id: str = Field(foreign_key="merchants.id", max_length=40)
    consumer_id: str = Field(foreign_key="consumers.id", max_length=40)
    status: str = Field(max_length=16)  # pending, confirmed, rejected, cancelled, expired
    units: int = money()
    hold_amount: int = money()
    release_amount: int | None = money(nullable=True)
    created_at: datetime = ts()
    expires_at: datetime = ts()
    answered_at: datetime | None = ts(nullable=True)
    ledger_seq: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class LedgerEntry(SQLModel, table=True):
    __tablename__ = "ledger_entries"
    __table_args__ = (*party_feeds("ledger", "card", "merchant", "consumer", order="seq"),)
    # On SQLite seq is the rowid (INTEGER PRIMARY KEY, migration 0003): the table is stored in seq order.
    seq: int = Field(
        sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False)
    )
    kind: str = Field(max_length=32)
    time: datetime = ts()
    canonical: str = Field(sa_column=Column(Text, nullable=False))
    leaf_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    chain_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    card_id: str | None = Field(default=None, max_length=40)
    merchant_id: str | None = Field(default=None, max_length=40)
    consumer_id: str | None = Field(default=None, max_length=40)


class LedgerHead(SQLModel, table=True):
    """One row: the size and chain head. Every write batch locks it, so writers serialise across replicas."""

    __tablename__ = "ledger_head"
    id: int = Field(primary_key=True)
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    head: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    # Running sums of what the entries state, for the reconciliation; `verify` recomputes them.
    paid_in: int = money(default=0)
    released: int = money(default=0)
    refunded: int = money(default=0)
    held: int = money(default=0)


class MerkleNode(SQLModel, table=True):
    """Hash of the perfect subtree (level, index), stored as entries are appended: proofs read O(log n) rows."""

    __tablename__ = "merkle_nodes"
    level: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    idx: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class Checkpoint(SQLModel, table=True):
    __tablename__ = "checkpoints"
    tree_size: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    root_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    chain_head: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    timestamp: str = Field(max_length=40)
    note: str = Field(sa_column=Column(Text, nullable=False))
    signature: str = Field(max_length=200)
    key_id: str = Field(max_length=16)


class IdempotencyKey(SQLModel, table=True):
    __tablename__ = "idempotency_keys"
    caller: str = Field(primary_key=True, max_length=255)
    key: str = Field(primary_key=True, max_length=255)
    request_hash: str = Field(max_length=64)
    status_code: int
    response_body: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = ts(index=True)


class AppState(SQLModel, table=True):
    """Small shared values every replica must agree on, e.g. the test clock's offset."""

    __tablename__ = "app_state"
    name: str = Field(primary_key=True, max_length=64)
    value: str = Field(sa_column=Column(Text, nullable=False))


class RateLimit(SQLModel, table=True):
    """Requests per client address per minute window, shared by replicas."""

    __tablename__ = "rate_limits"
    bucket: str = Field(primary_key=True, max_length=120)
    count: int
    window_start: datetime = ts(index=True)


# --- Health codes, complaints and alerts (预付健康码) -------------------------------------------


class MerchantDaily(RiskCounters, table=True):
    """Risk counters per merchant per day (day = days since 1970-01-01 UTC); a window is a sum of rows."""

    __tablename__ = "merchant_daily"
    merchant_id: str = Field(primary_key=True, max_length=40)
    day: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})


class MerchantHealth(RiskCounters, table=True):
    __tablename__ = "merchant_health"
    merchant_id: str = Field(primary_key=True, max_length=40)
    code: str = Field(max_length=8)
    since: datetime = ts()
    red_since: datetime | None = ts(nullable=True)
    warning_published_at: datetime | None = ts(nullable=True)
    policy_version: int
    new_merchant: bool = True
    indicators: str = Field(sa_column=Column(Text, nullable=False))
    reasons: str = Field(sa_column=Column(Text, nullable=False))
    # all-time counters (RiskCounters), kept as events happen
    onboarded_day: int


class Complaint(SQLModel, table=True):
    __tablename__ = "complaints"
    __table_args__ = (
        Index("ix_complaints_overdue", "status", "due_at"),
        *party_feeds("complaints", "merchant", "consumer"),
        Index("ix_complaints_merchant_time", "merchant_id", "created_at"),
    )
    id: str = Field(primary_key=True, max_length=40)
    merchant_id: str = Field(foreign_key="merchants.id", max_length=40)
    consumer_id: str = Field(foreign_key="consumers.id", max_length=40)
    card_id: str | None = Field(default=None, foreign_key="cards.id", max_length=40)
    category: str = Field(max_length=40)
    text: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(default="open", max_length=16)  # open, responded, resolved
    overdue: bool = False
    response: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    responded_at: datetime | None = ts(nullable=True)
    resolution: str | None = Field(default=None, max_length=16)  # upheld, dismissed, mediated
    resolution_note: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    resolved_at: datetime | None = ts(nullable=True)
    created_at: datetime = ts()
    due_at: datetime = ts()
    # The consumer held (or had held) a card of this merchant when filing: only such complaints count
    # toward the health code under the default policy (SPEC §3, risk/README.md).
    card_holder: bool = False


class Alert(SQLModel, table=True):
    """Regulators' feed. `seq` is the cursor: writes are serialised, so it grows in commit order."""

    __tablename__ = "alerts"
    seq: int = Field(
        sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    )
    id: str = Field(max_length=40, unique=True)
    merchant_id: str = Field(max_length=40, index=True)
    kind: str = Field(max_length=32)  # code_change, delisted
    from_code: str | None = Field(default=None, max_length=8)
    to_code: str | None = Field(default=None, max_length=8)
    reasons: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(max_length=16)  # open, acknowledged, resolved
    finding: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = ts()
    acknowledged_at: datetime | None = ts(nullable=True)
    resolved_at: datetime | None = ts(nullable=True)
    ledger_seq: int = Field(sa_column=Column(BigInteger, nullable=False))


class RiskPolicy(SQLModel, table=True):
    __tablename__ = "risk_policies"
    version: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    body: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = ts()


class InspectionDraw(SQLModel, table=True):
    __tablename__ = "inspection_draws"
    id: str = Field(primary_key=True, max_length=40)
    seed: str = Field(max_length=200)
    body: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = ts()


# --- Phone verification and SMS (实名手机号, SPEC §8) ------------------------------------------


class PhoneKeyed(SQLModel):
    """A row about one phone, found by the phone vault's keyed hash of the number (`PhoneVault.lookup`),
    never by the number itself: the verifications and the SMS outbox."""

    id: str = Field(primary_key=True, max_length=40)
    phone_lookup: str = Field(max_length=64)


class PhoneVerification(PhoneKeyed, table=True):
    """A one-time code sent to a phone; only its keyed hash is kept. Used once, burnt by five misses."""

    __tablename__ = "phone_verifications"
    __table_args__ = (
        Index("ix_phone_verifications_phone", "phone_lookup", "created_at"),
        CheckConstraint("attempts >= 0", name="attempts_nonnegative"),
    )
    code_hash: str = Field(max_length=64)
    attempts: int = 0
    created_at: datetime = ts()
    expires_at: datetime = ts()
    used_at: datetime | None = ts(nullable=True)


class SmsOutbox(PhoneKeyed, table=True):
    """Messages the `outbox` sender keeps instead of sending (development and test)."""

    __tablename__ = "sms_outbox"
    __table_args__ = (Index("ix_sms_outbox_phone", "phone_lookup", "id"),)
    phone_ciphertext: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    text: str = Field(sa_column=Column(Text, nullable=False))
    code: str = Field(max_length=16)
    sent_at: datetime = ts(index=True)


class MerchantConsumerDay(SQLModel, table=True):
    """Which consumers refunded a card of, or rejected an ask of, a merchant on a day (one row per merchant,
    kind, day and consumer; kind `refund` or `reject`). Distinct consumers in a window are a count of rows
    over a window's days, so the refund and rejection rates are judged by how many people stand behind
    them (SPEC §3), kept in the same transaction as the counters (service/health/service.py)."""

    __tablename__ = "merchant_consumer_days"
    merchant_id: str = Field(primary_key=True, max_length=40)
    kind: str = Field(primary_key=True, max_length=8)
    day: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    consumer_id: str = Field(primary_key=True, max_length=40)


class WitnessCosignature(SQLModel, table=True):
    """The cosignature line (C2SP cosignature/v1) a witness returned for the checkpoint at `tree_size`."""

    __tablename__ = "witness_cosignatures"
    tree_size: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    witness: str = Field(primary_key=True, max_length=300)  # the witness's vkey
    line: str = Field(sa_column=Column(Text, nullable=False))
    cosigned_at: int = Field(sa_column=Column(BigInteger, nullable=False))  # POSIX seconds, from the cosignature


class WitnessState(SQLModel, table=True):
    """Per witness: the size it last cosigned (the `old` of the next request), shared by every replica."""

    __tablename__ = "witness_state"
    witness: str = Field(primary_key=True, max_length=300)
    last_size: int = Field(sa_column=Column(BigInteger, nullable=False))
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    failures: int = 0
    retry_after_ms: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))  # POSIX ms: not asked before


# --- Custody: settlement batches, bank statements, lenders and credit consent (资金托管与信用推介) ---


class SettlementBatch(SQLModel, table=True):
    """One per calendar day in the settlement time zone: the unique date makes closing a day idempotent
    across replicas."""

    __tablename__ = "settlement_batches"
    id: str = Field(primary_key=True, max_length=40)
    date: str = Field(max_length=10, unique=True)  # YYYY-MM-DD, in ESCROW_SETTLEMENT_TIMEZONE
    payouts_total: int = money()
    refunds_total: int = money()
    payouts_count: int
    refunds_count: int
    digest: str = Field(max_length=64)  # SHA-256 of the batch's canonical body, stated in its ledger entry
    ledger_seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    created_at: datetime = ts()


class SettlementInstruction(SQLModel, table=True):
    """A payout to a merchant or a refund to a consumer's original payment route, for the bank to execute."""

    __tablename__ = "settlement_instructions"
    __table_args__ = (
        positive("amount"),
        Index("ix_settlement_instructions_batch", "batch_id", "id"),
        Index("ix_settlement_instructions_status", "status", "id"),
    )
    id: str = Field(primary_key=True, max_length=40)  # pay_… or rfi_…
    batch_id: str = Field(max_length=40)
    kind: str = Field(max_length=8)  # payout, refund
    merchant_id: str = Field(max_length=40)
    card_id: str | None = Field(default=None, max_length=40)
    amount: int = money()
    method: str | None = Field(default=None, max_length=32)
    reference: str | None = Field(default=None, max_length=128)
    status: str = Field(default="open", max_length=10)  # open, executed, failed
    bank_reference: str | None = Field(default=None, max_length=128)
    reason: str | None = Field(default=None, max_length=500)
    reported_at: datetime | None = ts(nullable=True)


class BankStatement(SQLModel, table=True):
    """A statement of the escrow account the bank uploaded, and what matching it found."""

    __tablename__ = "bank_statements"
    id: str = Field(primary_key=True, max_length=40)
    date_from: str = Field(max_length=10)
    date_to: str = Field(max_length=10)
    lines: int
    digest: str = Field(max_length=64)
    result: str = Field(sa_column=Column(Text, nullable=False))
    ledger_seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    created_at: datetime = ts()


class Lender(NamedParty, table=True):
    __tablename__ = "lenders"


class CreditConsent(SQLModel, table=True):
    """A merchant's consent to show its figures to lenders; withdrawing keeps the row with consent false."""

    __tablename__ = "credit_consents"
    merchant_id: str = Field(primary_key=True, max_length=40)
    consent: bool
    updated_at: datetime = ts()
    ledger_seq: int = Field(sa_column=Column(BigInteger, nullable=False))


# --- Events and webhooks (SPEC §9) -------------------------------------------------------------


class Event(SQLModel, table=True):
    """Every state change, written in the change's own transaction: the event log and the webhooks'
    transactional outbox. `seq` is the cursor: writes are serialised, so it grows in commit order."""

    __tablename__ = "events"
    __table_args__ = (*party_feeds("events", "merchant", "consumer", order="seq"),)
    seq: int = Field(
        sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    )
    id: str = Field(max_length=40, unique=True)
    type: str = Field(max_length=40)
    created_at: datetime = ts(index=True)
    ledger_seq: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    merchant_id: str | None = Field(default=None, max_length=40)  # who may see it (scoping), not shown
    consumer_id: str | None = Field(default=None, max_length=40)
    data: str = Field(sa_column=Column(Text, nullable=False))


class WebhookEndpoint(SQLModel, table=True):
    __tablename__ = "webhook_endpoints"
    __table_args__ = (Index("ix_webhook_endpoints_owner", "owner_id", "id"),)
    id: str = Field(primary_key=True, max_length=40)
    owner_role: str = Field(max_length=16)
    owner_id: str = Field(max_length=40)
    url: str = Field(sa_column=Column(Text, nullable=False))
    event_types: str = Field(sa_column=Column(Text, nullable=False))  # JSON list; ["*"] for every type
    status: str = Field(max_length=16)  # enabled, disabled
    secret: str = Field(max_length=80)
    previous_secret: str | None = Field(default=None, max_length=80)  # still signs until previous_secret_until
    previous_secret_until: datetime | None = ts(nullable=True)
    cursor: int = Field(sa_column=Column(BigInteger, nullable=False))  # events up to this seq are fanned out
    failing_since: datetime | None = ts(nullable=True)
    created_at: datetime = ts()


class WebhookDelivery(SQLModel, table=True):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_endpoint", "endpoint_id", "id"),
        Index("uq_webhook_deliveries_endpoint_event", "endpoint_id", "event_seq", unique=True),
    )
    id: str = Field(primary_key=True, max_length=40)
    endpoint_id: str = Field(max_length=40)
    event_seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    event_id: str = Field(max_length=40)
    event_type: str = Field(max_length=40)
    status: str = Field(max_length=16)  # pending, delivered, failed
    attempts: int = 0
    next_attempt_at: datetime = ts()
    claimed_until: datetime | None = ts(nullable=True)  # a replica is sending it until then
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, max_length=500)
    created_at: datetime = ts()
    delivered_at: datetime | None = ts(nullable=True)


class WebhookAttempt(SQLModel, table=True):
    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_delivery", "delivery_id", "id"),)
    id: str = Field(primary_key=True, max_length=40)
    delivery_id: str = Field(max_length=40)
    endpoint_id: str = Field(max_length=40, index=True)
    attempted_at: datetime = ts()
    status_code: int | None = None
    duration_ms: int
    error: str | None = Field(default=None, max_length=500)
