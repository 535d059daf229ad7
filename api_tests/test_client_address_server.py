"""Finding 3 against real processes started as in production (`escrow serve`): uvicorn believes
X-Forwarded-For only from `ESCROW_TRUSTED_PROXIES`, so rotating the header from loopback does not lift
the address limit; and a revocation on one process is 401 on another process at once."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from api_tests.realserver import OPERATOR_TOKEN, REPO, RealServer, fresh_database, new_merchant

LIMIT = 5
OP = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}


class ServedServer(RealServer):
    """A server started by `python -m service.cli serve`, the production entry point."""

    async def start(self, timeout: float = 60) -> ServedServer:
        cmd = [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.starts += 1
        await self.wait_healthy(timeout)
        return self


async def verifications(base: str, forwarded: list[str]) -> list[int]:
    statuses = []
    async with httpx.AsyncClient(base_url=base, timeout=30) as c:
        for i, xff in enumerate(forwarded):
            r = await c.post(
                "/v1/consumers/verifications", json={"phone": f"1580000{i:04d}"}, headers={"X-Forwarded-For": xff}
            )
            statuses.append(r.status_code)
    return statuses


async def test_forwarded_headers_are_believed_only_from_trusted_proxies_and_revocation_crosses_processes():
    db = await fresh_database("escrow_i12a_xff")
    data_dir = Path(tempfile.mkdtemp(prefix="escrow-xff-"))
    plain = ServedServer(data_dir, db, "plain", ESCROW_REGISTRATION_LIMIT_PER_MINUTE=str(LIMIT))
    proxied = ServedServer(
        data_dir, db, "proxied", ESCROW_REGISTRATION_LIMIT_PER_MINUTE=str(LIMIT), ESCROW_TRUSTED_PROXIES="127.0.0.1"
    )
    passed = False
    try:
        plain.migrate()
        await plain.start()
        await proxied.start()
        a, b = f"http://127.0.0.1:{plain.port}", f"http://127.0.0.1:{proxied.port}"
        async with httpx.AsyncClient(base_url=a, timeout=30) as c:
            start = (datetime.now(UTC) + timedelta(minutes=2)).replace(second=0, microsecond=0)
            r = await c.post("/v1/test/clock", json={"now": start.isoformat()}, headers=OP)
            assert r.status_code == 200, r.text
        async with httpx.AsyncClient(base_url=b, timeout=30) as c:  # the other process reads the moved clock too
            r = await c.post("/v1/test/clock", json={"now": (start + timedelta(seconds=1)).isoformat()}, headers=OP)
            assert r.status_code == 200, r.text

        # no trusted proxy: loopback rotating the header is one client
        rotating = [f"203.0.113.{i}" for i in range(LIMIT + 3)]
        assert await verifications(a, rotating) == [202] * LIMIT + [429] * 3

        # behind a trusted proxy each forwarded client has its own allowance, and the limit holds for each
        assert await verifications(b, [f"198.51.100.{i}" for i in range(LIMIT + 3)]) == [202] * (LIMIT + 3)
        assert await verifications(b, ["192.0.2.7"] * (LIMIT + 1)) == [202] * LIMIT + [429]

        # a key revoked through one process is refused by the other at once
        async with httpx.AsyncClient(base_url=a, timeout=30) as ca, httpx.AsyncClient(base_url=b, timeout=30) as cb:
            from api_tests.realserver import Http

            http = Http(plain.port)
            merchant = await new_merchant(http)
            await http.close()
            key = {"Authorization": f"Bearer {merchant['api_key']}"}
            assert (await cb.get("/v1/merchants/me", headers=key)).status_code == 200  # cached in process b
            assert (await ca.post(f"/v1/keys/{merchant['id']}/revoke", headers=OP)).status_code == 200
            r = await cb.get("/v1/merchants/me", headers=key)
            assert r.status_code == 401, r.text
        passed = True
    finally:
        proxied.stop()
        plain.stop()
        await db.drop()
        if passed:
            shutil.rmtree(data_dir, ignore_errors=True)
