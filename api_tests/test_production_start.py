"""Starting in production (issue 12, finding 9): `escrow serve` — the Docker image's command — refuses
to start without its secrets before it touches any database, with one line naming what is missing.
"""

from __future__ import annotations

import base64
import secrets

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from api_tests.realserver import Database, cli, server_env


def production_env(data_dir, **overrides: str) -> dict:
    pem = (
        Ed25519PrivateKey.generate()
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
    )
    env = server_env(data_dir, Database(None))
    env.update(
        {
            "ESCROW_ENV": "production",
            "ESCROW_OPERATOR_TOKEN": "op_" + secrets.token_urlsafe(32),
            "ESCROW_PHONE_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
            "ESCROW_SIGNING_KEY": pem,
            # Never reached: the check comes first (a closed loopback port, should it not).
            "ESCROW_DATABASE_URL": "postgresql://escrow@127.0.0.1:9/escrow",
            # The SMS gateway production sends verification codes through (SPEC §8).
            "ESCROW_SMS_SENDER": "http",
            "ESCROW_SMS_URL": "http://127.0.0.1:9/send",
            "ESCROW_SMS_TOKEN": "sms_" + secrets.token_urlsafe(16),
        }
    )
    env.update(overrides)
    return {k: v for k, v in env.items() if v is not None}


@pytest.mark.parametrize(
    "missing", ["ESCROW_OPERATOR_TOKEN", "ESCROW_PHONE_KEY", "ESCROW_SIGNING_KEY", "ESCROW_DATABASE_URL"]
)
def test_serve_in_production_without_a_secret_exits_naming_it_and_makes_nothing(tmp_path, missing):
    data = tmp_path / "data"
    data.mkdir()
    proc = cli(production_env(data, **{missing: None}), "serve", "--port", "9", timeout=60)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("escrow: refusing to start in production:"), proc.stderr
    assert missing in lines[0], lines[0]
    others = {"ESCROW_OPERATOR_TOKEN", "ESCROW_PHONE_KEY", "ESCROW_SIGNING_KEY", "ESCROW_DATABASE_URL"} - {missing}
    assert not any(name in lines[0] for name in others), f"only {missing} is missing: {lines[0]}"
    assert list(data.iterdir()) == [], "no SQLite file, no generated key before refusing"


def test_serve_in_production_with_no_configuration_at_all_names_every_missing_secret(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    env = production_env(
        data, ESCROW_OPERATOR_TOKEN=None, ESCROW_PHONE_KEY=None, ESCROW_SIGNING_KEY=None, ESCROW_DATABASE_URL=None
    )
    proc = cli(env, "serve", "--port", "9", timeout=60)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    for name in ("ESCROW_OPERATOR_TOKEN", "ESCROW_PHONE_KEY", "ESCROW_SIGNING_KEY", "ESCROW_DATABASE_URL"):
        assert name in proc.stderr, (name, proc.stderr)
    assert list(data.iterdir()) == []
    assert "op_" not in proc.stderr, "no operator token generated or printed"
