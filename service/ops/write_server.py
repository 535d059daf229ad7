"""The writer process: `python -m service.ops.write_server --socket PATH` (started by `serve --workers W`).

It answers the HTTP processes' asks and confirms over a Unix socket (see service/redemptions/link.py)
through one writer, so they share its batches instead of taking turns at the database's write lock.
It has the service's context (same ESCROW_* settings) but serves no HTTP and runs no background
task: the HTTP processes keep those. It exits when its stdin closes (the `serve` process is gone,
even by SIGKILL) or on SIGTERM, after the batch in hand is answered.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

log = logging.getLogger("escrow.write_server")


class WriterProcess:
    """`serve`'s handle on the writer process: starts it, points the HTTP processes at its socket
    (ESCROW_WRITER_SOCKET in the environment uvicorn's workers inherit), starts it again if it dies
    (meanwhile the HTTP processes write themselves), and ends it."""

    def __init__(self, settings):
        path = settings.writer_socket or str((settings.data_dir / "writer.sock").resolve())
        if len(path.encode()) > 100:  # a Unix socket's path has room for 107 bytes
            path = os.path.join(tempfile.mkdtemp(prefix="escrow-"), "writer.sock")
        self.path = path
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self._stopping = threading.Event()

    def _spawn(self) -> bool:
        env = {k: v for k, v in os.environ.items() if k != "ESCROW_WRITER_SOCKET"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.ops.write_server", "--socket", self.path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"ready":
            proc.kill()
            proc.wait()
            return False
        self.proc = proc
        self.starts += 1
        return True

    def start(self) -> bool:
        if not self._spawn():
            return False
        os.environ["ESCROW_WRITER_SOCKET"] = self.path
        threading.Thread(target=self._watch, name="writer-process-watch", daemon=True).start()
        return True

    def _watch(self) -> None:
        while not self._stopping.is_set():
            proc = self.proc
            if proc is not None:
                code = proc.wait()
                if self._stopping.is_set():
                    return
                log.warning("the writer process exited with %s; starting it again", code)
            time.sleep(1)
            if not self._stopping.is_set() and not self._spawn():
                self.proc = None

    def stop(self) -> None:
        self._stopping.set()
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        assert proc.stdin is not None
        proc.stdin.close()  # it answers what it holds, then exits
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _main(path: str) -> None:
    from service.app import build_context
    from service.core.settings import get_settings
    from service.redemptions import link

    ctx = build_context(get_settings())
    async with ctx.engines.reader.connect() as conn:
        await ctx.clock.refresh(conn)
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, *gc.get_threshold()[1:])  # as the HTTP processes (service/app.py)
    try:
        os.unlink(path)  # left by a writer process that was killed
    except FileNotFoundError:
        pass
    server = await link.serve(ctx, path)
    os.chmod(path, 0o600)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    parent = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(parent), sys.stdin)

    async def watch_parent() -> None:
        while await parent.read(4096):
            pass
        stop.set()

    watching = asyncio.create_task(watch_parent())
    print("ready", flush=True)
    try:
        await stop.wait()
    finally:
        watching.cancel()
        server.close()
        await ctx.writer.stop()
        await ctx.engines.dispose()
        try:
            os.unlink(path)
        except OSError:
            pass


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the whole group: `serve` ends this one
    logging.basicConfig(level=logging.WARNING)
    parser = argparse.ArgumentParser(prog="write_server")
    parser.add_argument("--socket", required=True)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_main(args.socket))
