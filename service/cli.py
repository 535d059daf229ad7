"""Command line: `escrow serve | migrate | sweep | ledger verify | ledger export | ledger verify-receipt`.

Every command reads the same `ESCROW_*` configuration as the service.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from service.core.settings import get_settings


def _serve(args) -> int:
    import uvicorn

    from service.ops import migrate

    settings = get_settings()
    # Before anything touches the database: a production start without its secrets stops here with
    # one clear line (not a traceback from inside uvicorn, after a migration of a default database).
    try:
        settings.check_production()
    except RuntimeError as exc:
        print(f"escrow: {exc}", file=sys.stderr)
        return 2
    migrate.upgrade(settings.effective_database_url)
    # X-Forwarded-For only from ESCROW_TRUSTED_PROXIES: uvicorn would otherwise believe any loopback caller
    trusted = ",".join(p.strip() for p in settings.trusted_proxies.split(",") if p.strip())
    uvicorn.run(
        "service.main:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="warning",
        access_log=False,
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted,
    )
    return 0


def _migrate(args) -> int:
    from service.ops import migrate

    settings = get_settings()
    if args.downgrade:
        migrate.downgrade(settings.effective_database_url, args.downgrade)
    else:
        migrate.upgrade(settings.effective_database_url)
    from service.core.filemodes import secure_data_dir

    secure_data_dir(settings)
    print("schema is up to date" if not args.downgrade else f"downgraded to {args.downgrade}")
    return 0


async def _with_context(fn):
    from service.app import build_context
    from service.ops import migrate

    settings = get_settings()
    await asyncio.to_thread(migrate.upgrade, settings.effective_database_url)
    ctx = build_context(settings)
    async with ctx.engines.reader.connect() as conn:
        await ctx.clock.refresh(conn)
    try:
        return await fn(ctx)
    finally:
        await ctx.writer.stop()
        await ctx.engines.dispose()


def _sweep(args) -> int:
    from service.ops.sweeper import sweep_once

    totals = asyncio.run(_with_context(sweep_once))
    print(json.dumps(totals))
    return 0


def _progress_printer():
    if not sys.stderr.isatty():
        return None

    def show(n: int) -> None:
        print(f"\rverified {n:,} entries", end="", file=sys.stderr, flush=True)

    return show


def print_verified(report: dict, prefix: str = "") -> None:
    """What `escrow ledger verify` and `escrow backup restore` say of a ledger that verified."""
    root = f", root {report['root_hash']}" if report.get("root_hash") else ""
    print(
        f"{prefix}ledger OK: {report['size']} entries, chain head {report['chain_head']}{root}; "
        "ledger sums equal card balances"
    )
    for line in report.get("checks", []):
        print(line)


def _verify(args) -> int:
    from service.ledger_api.service import verify_ledger

    async def run(ctx):
        return await verify_ledger(ctx.engines.reader, _progress_printer(), public_key=ctx.keys.public_key)

    report = asyncio.run(_with_context(run))
    if sys.stderr.isatty():
        print(file=sys.stderr)
    if report["ok"]:
        print_verified(report)
        return 0
    where = f" at seq {report['bad_seq']}" if report.get("bad_seq") is not None else ""
    print(f"ledger FAILED{where}: {report['reason']}")
    return 1


def main(argv: list[str] | None = None) -> int:
    from service.core.filemodes import restrict_umask

    restrict_umask()  # data folder 0700, database files and keys 0600 (serve, migrate, restore, …)
    parser = argparse.ArgumentParser(prog="escrow", description="Prepaid escrow service (预付保)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="migrate, then run the HTTP service")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(func=_serve)
    p = sub.add_parser("migrate", help="bring the schema up to date (or --downgrade REV)")
    p.add_argument("--downgrade", default=None)
    p.set_defaults(func=_migrate)
    p = sub.add_parser("sweep", help="one sweep: expire holds, refund expired cards, close merchants")
    p.set_defaults(func=_sweep)
    ledger = sub.add_parser("ledger", help="ledger commands").add_subparsers(dest="ledger_command", required=True)
    p = ledger.add_parser("verify", help="recompute the whole chain and check ledger sums against card balances")
    p.set_defaults(func=_verify)
    for extra in _EXTRA_COMMANDS:
        extra(ledger, sub)
    args = parser.parse_args(argv)
    return args.func(args)


def _verify_receipt(args) -> int:
    if len(args.files) == 1 and args.log_vkey:
        from service.ops.ledger_cli import verify_tlog_receipt

        return verify_tlog_receipt(args)
    if len(args.files) != 4 or args.log_vkey:
        print(
            "usage: verify-receipt FILE --log-vkey VKEY [--witness-vkey VKEY ...] [--quorum K], "
            "or verify-receipt ENTRY PROOF CHECKPOINT PUBKEY",
            file=sys.stderr,
        )
        return 2
    from ledger.receipt import main as receipt_main

    return receipt_main(args.files)


def _export(args) -> int:
    from service.ledger_api.export import export_jsonl

    async def run(ctx):
        out = open(args.output, "wb") if args.output != "-" else sys.stdout.buffer  # noqa: ASYNC230 (a one-shot CLI)
        try:
            return await export_jsonl(ctx.engines.reader, out)
        finally:
            if out is not sys.stdout.buffer:
                out.close()

    n = asyncio.run(_with_context(run))
    print(f"exported {n} entries", file=sys.stderr)
    return 0


def _checkpoint(args) -> int:
    from service.ledger_api.checkpoints import make_checkpoint

    print(json.dumps(asyncio.run(_with_context(make_checkpoint)), ensure_ascii=False, indent=2))
    return 0


def _ledger_extras(ledger, sub) -> None:
    p = ledger.add_parser(
        "verify-receipt",
        help="check a receipt offline: a tlog-proof FILE with --log-vkey "
        "(and witnesses, quorum), or four JSON files: entry, proof, checkpoint, public key",
    )
    p.add_argument("files", nargs="+")
    p.add_argument("--log-vkey", default=None, help="the log's C2SP vkey (tlog-proof form)")
    p.add_argument("--witness-vkey", action="append", default=[], help="a trusted witness's vkey (repeatable)")
    p.add_argument("--quorum", type=int, default=0, help="cosignatures required from those witnesses")
    p.add_argument("--entry", default=None, help="the entry's canonical JSON file (default: the proof's extra)")
    p.set_defaults(func=_verify_receipt)
    p = ledger.add_parser("export", help="export the ledger as JSON Lines (one entry a line) for the bank")
    p.add_argument("--output", "-o", default="-")
    p.set_defaults(func=_export)
    p = ledger.add_parser("checkpoint", help="make a signed checkpoint now and print it")
    p.set_defaults(func=_checkpoint)


_EXTRA_COMMANDS: list = [_ledger_extras]


def _health_extras(ledger, sub) -> None:
    from service.health.recompute import add_commands as add_risk

    add_risk(sub)
    from service.ops.demo import add_commands as add_demo

    add_demo(sub)


_EXTRA_COMMANDS.append(_health_extras)


def _backup_extras(ledger, sub) -> None:
    from service.ops.backup import add_commands as add_backup

    add_backup(sub)


_EXTRA_COMMANDS.append(_backup_extras)


def _sms_extras(ledger, sub) -> None:
    from service.consumers.sms import add_commands as add_sms

    add_sms(sub)


_EXTRA_COMMANDS.append(_sms_extras)


def _witness_extras(ledger, sub) -> None:
    from service.ops.ledger_cli import add_commands as add_witness_monitor

    add_witness_monitor(ledger, sub)


_EXTRA_COMMANDS.append(_witness_extras)

if __name__ == "__main__":
    sys.exit(main())
