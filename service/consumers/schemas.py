"""Request and response models of consumers: phone verification, registration, sessions, the inbox."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from service.cards.schemas import NulFree
from service.http.common import Name, Page, Strict
from service.redemptions.schemas import Redemption

Phone = Annotated[str, StringConstraints(min_length=5, max_length=20)]
VerificationId = Annotated[str, StringConstraints(min_length=1, max_length=40)]
Code = Annotated[str, StringConstraints(pattern=r"^[0-9]{6}$")]


class VerificationCreate(Strict):
    phone: Annotated[Phone, NulFree]


class ConsumerCreate(Strict):
    name: Annotated[Name, NulFree]
    phone: Annotated[Phone, NulFree]
    verification_id: Annotated[VerificationId, NulFree]
    code: Code


class SessionCreate(Strict):
    phone: Annotated[Phone, NulFree]
    verification_id: Annotated[VerificationId, NulFree]
    code: Code


class VerificationStarted(BaseModel):
    verification_id: str
    expires_at: str


class Consumer(BaseModel):
    id: str
    name: str
    phone_hint: str = Field(description="The phone, masked")


TOKEN_ONCE = "The consumer's token: in the first answer only, never in an Idempotency-Key replay"


class RegisteredConsumer(Consumer):
    token: str | None = Field(None, description=TOKEN_ONCE)


class Session(BaseModel):
    consumer_id: str
    token: str | None = Field(None, description=TOKEN_ONCE)


class RedemptionPage(Page[Redemption]):
    """A page of redemptions, each as `GET /v1/redemptions/{redemption_id}` answers it."""


class SmsMessage(BaseModel):
    phone: str
    text: str
    code: str
    sent_at: str


class SmsOutbox(BaseModel):
    items: list[SmsMessage]
