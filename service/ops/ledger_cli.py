"""Command-line parts of SPEC §11: `escrow witness keygen|serve`, `escrow ledger monitor`, tlog-proof receipts.

None of these needs the service's database: a bank runs them on its own machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson


def verify_tlog_receipt(args) -> int:
    from ledger.tlog_proof import TlogProofError, verify_tlog_proof

    try:
        text = Path(args.files[0]).read_text(encoding="utf-8")
        entry = Path(args.entry).read_bytes() if args.entry else None
    except (OSError, UnicodeDecodeError) as exc:
        print(f"FAIL: cannot read input: {exc}")
        return 1
    try:
        proof, cp = verify_tlog_proof(text, args.log_vkey, args.witness_vkey, args.quorum, entry)
    except (TlogProofError, ValueError) as exc:
        print(f"FAIL: {exc}")
        return 1
    names = ", ".join(name for name, _ in cp.witnesses) or "no witness"
    print(
        f"OK: entry {proof.index} is in {cp.origin} at tree size {cp.tree_size}, cosigned by {names} "
        f"(quorum {args.quorum})"
    )
    return 0


def _monitor(args) -> int:
    from ledger.monitor import Monitor

    log_vkey = args.log_vkey
    if log_vkey is None:  # trust on first use, kept in the state folder
        import httpx

        saved = Path(args.state) / "log_vkey" if args.state else None
        if saved is not None and saved.exists():
            log_vkey = saved.read_text().strip()
        else:
            log_vkey = httpx.get(args.url.rstrip("/") + "/v1/ledger/public-key", timeout=30).json()["verifier_key"]
            if saved is not None:
                saved.parent.mkdir(parents=True, exist_ok=True)
                saved.write_text(log_vkey + "\n")
    base = args.url.rstrip("/")
    report = Monitor(base, log_vkey, args.witness_vkey, args.quorum, args.state).run(
        (lambda n: print(f"\r{n} entries", end="", file=sys.stderr)) if args.progress else None
    )
    if args.progress:
        print(file=sys.stderr)
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    return 0 if report["ok"] else 1


def add_commands(ledger, sub) -> None:
    from service.ops.witness_server import add_commands as add_witness

    add_witness(sub)
    p = ledger.add_parser("monitor", help="follow a log by its C2SP tiles; verify cosignatures, tree and money rules")
    p.add_argument("url", help="the service's base URL (its tiles are under /log/)")
    p.add_argument("--state", default=None, help="folder keeping what the monitor saw last")
    p.add_argument("--log-vkey", default=None, help="the log's vkey (default: fetched once, then kept in --state)")
    p.add_argument("--witness-vkey", action="append", default=[], help="a trusted witness's vkey (repeatable)")
    p.add_argument("--quorum", type=int, default=0)
    p.add_argument("--progress", action="store_true")
    p.set_defaults(func=_monitor)
