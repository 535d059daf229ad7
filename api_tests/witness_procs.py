"""Witness processes for tests: `escrow witness serve` on a loopback port, with its own key and state file."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from api_tests.realserver import REPO, free_port


class WitnessProcess:
    def __init__(self, folder: Path, name: str, log_vkey: str) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.key_file = self.folder / "witness.key"
        self.state_file = self.folder / "state.json"
        self.log_vkey = log_vkey
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        out = subprocess.run(
            [sys.executable, "-m", "service.cli", "witness", "keygen", name, "--out", str(self.key_file)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        self.vkey = out.stdout.strip().splitlines()[-1]
        self.name = name

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> WitnessProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ESCROW_")}
        with open(self.folder / "witness.log", "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "service.cli",
                    "witness",
                    "serve",
                    "--key",
                    str(self.key_file),
                    "--log-vkey",
                    self.log_vkey,
                    "--state",
                    str(self.state_file),
                    "--port",
                    str(self.port),
                ],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.folder / "witness.log").read_text()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError("witness did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def config(self) -> dict:
        return {"vkey": self.vkey, "url": self.url}
