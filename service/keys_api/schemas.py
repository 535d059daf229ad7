"""Request and response models of API key rotation and revocation."""

from __future__ import annotations

from pydantic import BaseModel, Field

from service.http.common import Strict


class KeyRotation(Strict):
    grace_seconds: int = Field(
        0, ge=0, le=30 * 86400, description="How long the old keys keep working (seconds, at most 30 days); 0: stop now"
    )


class RotatedKey(BaseModel):
    party_id: str
    role: str
    api_key: str = Field(description="The new key, shown this once")
    old_keys: int = Field(description="How many old keys end")
    old_keys_expire_at: str


class RevokedKeys(BaseModel):
    party_id: str
    role: str
    revoked: int = Field(description="How many live keys ended")
    revoked_at: str
