"""Configuration from the environment (`ESCROW_*`), with safe development defaults.

In production the service refuses to start with a default or missing secret: the operator token,
the phone-encryption key and the ledger signing key must all be given.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SECRETS = {"", "changethis", "changeme", "secret", "dev"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ESCROW_", extra="ignore")

    env: Literal["development", "test", "production"] = "development"
    data_dir: Path = Path("data")
    database_url: str = ""  # empty: SQLite file in data_dir
    operator_token: str = ""
    phone_key: str = ""  # base64 of 32 bytes; generated into data_dir in development
    signing_key: str = ""  # Ed25519 private key, PEM; generated into data_dir in development
    ledger_origin: str = "escrow.example/ledger"

    price_cap: int = Field(500_000, ge=1, description="Per-card price cap, fen (MOFCOM: 5,000 yuan)")
    cooling_off_days: int = Field(7, ge=0)
    hold_minutes: int = Field(15, ge=1)
    closure_notice_days: int = Field(30, ge=0)
    sweep_interval_seconds: float = Field(5.0, gt=0)
    checkpoint_interval_seconds: float = Field(3.0, gt=0)
    registration_limit_per_minute: int = Field(60, ge=1)
    # Operations one write batch takes at most. At 512 connections, 512 beat 256 in seven of eight alternating
    # runs, by 3–40 %, on both databases (fewer commits and round trips per operation; bench/README.md, stop 26).
    writer_max_batch: int = Field(512, ge=1)
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    background_tasks: bool = True
    risk_incremental: bool = True  # false only to measure what health-code updates cost (benchmarks)
    fastpath: bool = True  # false: asks and confirms go through FastAPI's routes (service/redemptions/fastpath.py)
    # Pruning by the sweeper (issue 12): idempotency keys are promised for 24 hours (SPEC), never less;
    # rate-limit rows are kept this long after their window started (at least the longest window in use).
    idempotency_keep_hours: int = Field(24, ge=24)
    rate_limit_keep_seconds: int = Field(86_400, ge=60)

    # Phone verification, SMS and client addresses (SPEC §8)
    sms_sender: Literal["outbox", "http", ""] = ""  # empty: outbox outside production, http in production
    sms_url: str = ""
    sms_token: str = ""
    sms_sign_name: str = "预付保"
    sms_template: str = "SMS_ESCROW_CODE"
    sms_timeout_seconds: float = Field(5.0, gt=0)
    sms_retries: int = Field(2, ge=0, le=10)
    sms_outbox_in_production: bool = False  # production refuses the outbox sender unless this says otherwise
    codes_per_phone_per_hour: int = Field(5, ge=1)
    trusted_proxies: str = ""  # comma-separated addresses or CIDRs whose X-Forwarded-For is believed
    # Witnesses (SPEC §11): JSON list of {"vkey": "<C2SP vkey>", "url": "<submission prefix>"}, and how many
    # of them must cosign a checkpoint for it to count as witnessed.
    witnesses: str = ""
    witness_quorum: int = Field(0, ge=0)
    witness_timeout_seconds: float = Field(5.0, gt=0)
    # Custody (SPEC §12): settlement days are calendar days in this zone; the sweeper closes yesterday
    # at this local hour.
    settlement_timezone: str = "Asia/Shanghai"
    settlement_hour: int = Field(2, ge=0, le=23)

    @field_validator("settlement_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)  # an unknown zone stops the start-up, not the first settlement
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    # Events and webhooks (SPEC §9)
    event_retention_days: int = Field(30, ge=30)
    webhook_retry_seconds: str = "5,300,1800,7200,18000,36000,36000"  # back-off between attempts
    webhook_timeout_seconds: float = Field(10.0, gt=0, le=60)
    webhook_disable_after_days: float = Field(5.0, gt=0)
    webhook_secret_grace_hours: float = Field(24.0, ge=0)
    webhook_poll_seconds: float = Field(0.5, gt=0)
    webhook_concurrency: int = Field(32, ge=1)
    webhook_endpoint_concurrency: int = Field(16, ge=1)
    webhook_allow_private: bool | None = None  # None: only outside production
    webhook_process: bool = True  # the dispatcher in a companion process (False: a task of the API process)

    @property
    def webhook_retry_schedule(self) -> list[float]:
        return [float(x) for x in self.webhook_retry_seconds.split(",") if x.strip()]

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            url = self.database_url
            if url.startswith("postgresql://") or url.startswith("postgres://"):
                url = "postgresql+asyncpg://" + url.split("://", 1)[1]
            if url.startswith("sqlite:///"):
                url = "sqlite+aiosqlite:///" + url[len("sqlite:///") :]
            return url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'escrow.db').resolve()}"

    @property
    def effective_sms_sender(self) -> str:
        return self.sms_sender or ("http" if self.is_production else "outbox")

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    def check_production(self) -> None:
        """Refuse to run production on development secrets."""
        if not self.is_production:
            return
        problems = []
        if self.operator_token.strip().lower() in DEFAULT_SECRETS or len(self.operator_token) < 32:
            problems.append("ESCROW_OPERATOR_TOKEN must be set to a random value of at least 32 characters")
        if not self.phone_key:
            problems.append("ESCROW_PHONE_KEY must be set (base64 of 32 random bytes)")
        if not self.signing_key:
            problems.append("ESCROW_SIGNING_KEY must be set (Ed25519 private key, PEM)")
        if not self.database_url:
            problems.append("ESCROW_DATABASE_URL must be set in production")
        problems.extend(self._sms_problems())
        if problems:
            raise RuntimeError("refusing to start in production: " + "; ".join(problems))

    def _sms_problems(self) -> list[str]:
        from service.http.client_address import parse_networks

        problems = []
        try:
            parse_networks(self.trusted_proxies)
        except ValueError as exc:
            problems.append(f"ESCROW_TRUSTED_PROXIES: {exc}")
        if self.effective_sms_sender == "outbox" and not self.sms_outbox_in_production:
            problems.append(
                "ESCROW_SMS_SENDER=outbox keeps codes in the database: use http, or set "
                "ESCROW_SMS_OUTBOX_IN_PRODUCTION=true to accept that"
            )
        if self.effective_sms_sender == "http":
            if not self.sms_url.startswith(("https://", "http://")):
                problems.append("ESCROW_SMS_URL must be the gateway's http(s) URL")
            if self.sms_token.strip().lower() in DEFAULT_SECRETS:
                problems.append("ESCROW_SMS_TOKEN must be set")
        return problems


@lru_cache
def get_settings() -> Settings:
    return Settings()
