"""`escrow demo` plays the whole story over HTTP; here against the ASGI app on an empty database."""

from __future__ import annotations

from api_tests.conftest import OPERATOR_TOKEN
from api_tests.factories import create_auditor, ledger_entries
from service.health.recompute import recompute
from service.ops.demo import run_demo


async def test_the_demo_tells_the_story_to_its_end(client, ctx):
    lines: list[str] = []
    final = await run_demo(client, OPERATOR_TOKEN, say=lines.append)

    assert final["salon_codes"] == ["yellow", "red"]
    assert final["salon_alerts"] == [("code_change", "green", "yellow"), ("code_change", "yellow", "red")]
    assert final["cards_refunded"] == 60 and final["refunded"] == 60 * 30_000
    assert final["gym_code"] == "green"
    recon = final["reconciliation"]
    assert recon["consistent"] is True and recon["escrow"] == 2 * 60_000 - 3 * 6_000
    assert (recon["paid_in"], recon["released"], recon["refunded"]) == (
        2 * 60_000 + 60 * 30_000,
        3 * 6_000,
        60 * 30_000,
    )
    assert final["checkpoint"]["tree_size"] > 0

    # What the newcomer reads: numbered steps, ending with the books in balance.
    text = "\n".join(lines)
    assert "== 1. The operator" in text and "== 9. The auditor" in text
    assert "ledger agrees with card balances: True" in text and lines[-1].startswith("\nDone")

    # The state it leaves: the salon defaulted and out of the directory, its alerts resolved, the ledger
    # holding the code changes, the warning and the default; the risk counters agree with a recompute.
    r = await client.get("/v1/merchants")
    assert [m["id"] for m in r.json()["items"]] == [final["gym"]]
    auditor = await create_auditor(client)
    kinds = [e["kind"] for e in await ledger_entries(client, auditor, limit=200)]
    assert kinds.count("health_code") >= 2 and "warning_published" in kinds and "merchant_default" in kinds
    assert (await recompute(ctx.engines.writer))["ok"]


def test_cli_demo_is_registered(capsys):
    import pytest

    from service.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--help"])
    assert exit_.value.code == 0 and "--operator-token" in capsys.readouterr().out
