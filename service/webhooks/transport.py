"""A lean HTTP/1.1 transport for httpx, for webhook deliveries.

httpcore (httpx's default transport) costs about a millisecond of CPU per request on the shared
2-core machine (checking every pooled connection's socket on each request, anyio's layers), six
times what httpx's own client layer costs; the dispatcher sends one request per event, beside the
money path. This transport speaks just what a delivery needs: one POST written in one piece on a
kept-alive connection (TLS with the host name for SNI and certificate checks), the status line and
headers read back, a Content-Length body of at most 64 KiB drained so the connection is reused;
any other answer (chunked, no length, larger) has its connection closed. Redirects are answers like
any other (httpx does not follow them: `follow_redirects=False`).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import defaultdict, deque

import httpx

MAX_BODY = 64 * 1024
MAX_HEAD = 16 * 1024


class _Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    def close(self) -> None:
        try:
            self.writer.close()
        except Exception:
            pass


class LeanTransport(httpx.AsyncBaseTransport):
    def __init__(self, timeout: float, keep: int = 16):
        self.timeout = timeout
        self.keep = keep
        self._idle: dict[tuple, deque[_Conn]] = defaultdict(deque)
        self._ssl = ssl.create_default_context()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await asyncio.wait_for(self._send(request), self.timeout)
        except TimeoutError:
            raise httpx.ReadTimeout("timed out", request=request) from None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError) as exc:
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}", request=request) from None

    async def _send(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        tls = url.scheme == "https"
        sni = request.extensions.get("sni_hostname") or url.host
        key = (url.scheme, url.host, url.port, sni)
        body = request.content
        target = url.raw_path.decode("ascii")
        lines = [f"{request.method} {target} HTTP/1.1"]
        lines += [
            f"{k.decode('latin-1')}: {v.decode('latin-1')}"
            for k, v in request.headers.raw
            if k.lower() not in (b"content-length", b"transfer-encoding", b"connection")
        ]
        lines.append(f"content-length: {len(body)}")
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        idle = self._idle[key]
        conn = idle.pop() if idle else None
        if conn is not None and conn.reader.at_eof():
            conn.close()
            conn = None
        if conn is None:
            port = url.port or (443 if tls else 80)
            reader, writer = await asyncio.open_connection(
                url.host, port, ssl=self._ssl if tls else None, server_hostname=sni if tls else None, limit=MAX_HEAD
            )
            conn = _Conn(reader, writer)
        try:
            conn.writer.write(raw)
            head = await conn.reader.readuntil(b"\r\n\r\n")
            status_line, *header_lines = head.decode("latin-1").split("\r\n")
            status = int(status_line.split(" ", 2)[1])
            headers = []
            length = None
            reuse = True
            for line in header_lines:
                if not line:
                    continue
                name, _, value = line.partition(":")
                name, value = name.strip(), value.strip()
                headers.append((name, value))
                lower = name.lower()
                if lower == "content-length":
                    length = int(value)
                elif lower == "transfer-encoding" or (lower == "connection" and value.lower() == "close"):
                    reuse = False
            content = b""
            if length is not None and length <= MAX_BODY and reuse:
                content = await conn.reader.readexactly(length)
            else:
                reuse = False
        except BaseException:
            conn.close()
            raise
        if reuse and len(idle) < self.keep:
            idle.append(conn)
        else:
            conn.close()
        return httpx.Response(status, headers=headers, content=content, request=request)

    async def aclose(self) -> None:
        for idle in self._idle.values():
            while idle:
                idle.pop().close()
        self._idle.clear()
