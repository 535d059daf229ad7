"""Configuration from the environment (`ESCROW_*`), with safe development defaults.

In production the service refuses to start with a default or missing secret: the operator token,
the phone-encryption key and the ledger signing key must all be given.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
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
    writer_max_batch: int = Field(256, ge=1)
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    background_tasks: bool = True
    risk_incremental: bool = True  # false only to measure what health-code updates cost (benchmarks)
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
                url = "sqlite+aiosqlite:///" + url[len("sqlite:///"):]
            return url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'escrow.db').resolve()}"

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
        if problems:
            raise RuntimeError("refusing to start in production: " + "; ".join(problems))


@lru_cache
def get_settings() -> Settings:
    return Settings()
