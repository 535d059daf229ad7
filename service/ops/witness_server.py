"""The witness as a small HTTP program (`escrow witness serve`): C2SP tlog-witness `POST /add-checkpoint`.

The bank or the regulator runs it on its own machine. It knows only its key, the log's vkey and its
state file: no database, nothing of the service. Standard library HTTP server (one thread a request;
`ledger.witness` serialises the state updates).
"""

from __future__ import annotations

import argparse
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ledger.cosignature import generate_witness_key
from ledger.witness import Witness

MAX_BODY = 64 * 1024


def make_handler(witness: Witness):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as tlog-witness recommends

        def _send(self, status: int, ctype: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802
            if self.path.rstrip("/") != "/add-checkpoint":
                self._send(404, "text/plain", b"not found\n")
                return
            try:
                length = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_BODY:
                self.close_connection = True
                self._send(400, "text/plain", b"missing or too large Content-Length\n")
                return
            status, ctype, body = witness.add_checkpoint(self.rfile.read(length))
            self._send(status, ctype, body)

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/vkey":
                self._send(200, "text/plain", witness.vkey.encode() + b"\n")
            else:
                self._send(404, "text/plain", b"not found\n")

        def log_message(self, fmt, *args) -> None:
            sys.stderr.write("witness: " + (fmt % args) + "\n")

    return Handler


def serve(key_file: str, log_vkeys: list[str], state_file: str, host: str, port: int) -> int:
    witness = Witness(Path(key_file).read_text(), log_vkeys, state_file)
    server = ThreadingHTTPServer((host, port), make_handler(witness))
    server.daemon_threads = True
    print(f"witness {witness.vkey} listening on http://{host}:{server.server_address[1]}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _keygen(args) -> int:
    private, vkey = generate_witness_key(args.name)
    if args.out:
        path = Path(args.out)
        if path.exists():
            print(f"refusing to overwrite {path}", file=sys.stderr)
            return 1
        path.touch(mode=0o600)
        path.write_text(private + "\n")
    else:
        print(private)
    print(vkey)
    return 0


def _serve(args) -> int:
    return serve(args.key, args.log_vkey, args.state, args.host, args.port)


def add_commands(sub) -> None:
    w = sub.add_parser("witness", help="run a C2SP tlog-witness (the bank's or the regulator's cosigner)")
    wsub = w.add_subparsers(dest="witness_command", required=True)
    p = wsub.add_parser("keygen", help="make a cosigner key; prints its vkey")
    p.add_argument("name", help="the witness's key name, e.g. bank.example/witness")
    p.add_argument("--out", help="write the private key to this file (mode 0600) instead of printing it")
    p.set_defaults(func=_keygen)
    p = wsub.add_parser("serve", help="serve POST /add-checkpoint")
    p.add_argument("--key", required=True, help="private key file from `escrow witness keygen --out`")
    p.add_argument("--log-vkey", required=True, action="append", help="the log's vkey (repeatable)")
    p.add_argument("--state", required=True, help="state file (created if missing)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.set_defaults(func=_serve)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="escrow-witness")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
