"""The README's curl walkthrough, run as written (by bash, with curl and jq) against
`bridge simulators` + `bridge serve`, as a new user runs it; tests/test_cli.py runs it against
`bridge demo --stay` too."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.test_crash import free_port

README = Path(__file__).resolve().parent.parent / "README.md"
KEY = "brk_walkthrough_local_key"
# What the harness adds around the README's text: stop at the first failed command, and let
# curl fail on an HTTP error (the README's `curl -s` would print the error and go on).
PRELUDE = """set -euo pipefail
curl() { command curl -S --fail-with-body --max-time 30 "$@"; }
"""

pytestmark = pytest.mark.skipif(not (shutil.which("curl") and shutil.which("jq")),
                                reason="the walkthrough needs curl and jq")


def walkthrough() -> str:
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), re.DOTALL)
    [block] = [b for b in blocks if b.startswith("B=${B:-http://127.0.0.1:8000}")]
    return block


def user_env(**extra: str) -> dict[str, str]:
    """A shell's environment: no BRIDGE_* of the test run, this venv's `bridge` first."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    path = os.path.dirname(sys.executable) + os.pathsep + keep.get("PATH", "")
    return {**keep, "PATH": path, **extra}


def run_walkthrough(cwd: Path, **env: str) -> None:
    done = subprocess.run(["bash", "-c", PRELUDE + walkthrough()], cwd=cwd,
                          env=user_env(**env), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert (cwd / "fox.mp4").read_bytes()[4:8] == b"ftyp"  # the finished video, fetched
    assert '"status":"canceled"' in done.stdout.replace(" ", "")


class Output:
    """A child process's stdout lines, read as they come."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._reader = threading.Thread(
            target=lambda: self.lines.extend(process.stdout or ()), daemon=True)
        self._reader.start()
        self.process = process

    def wait_for(self, text: str, seconds: float = 30) -> str:
        deadline = time.monotonic() + seconds
        while not any(text in line for line in self.lines):
            assert self.process.poll() is None, "".join(self.lines)
            assert time.monotonic() < deadline, f"no {text!r} in:\n" + "".join(self.lines)
            time.sleep(0.05)
        return next(line for line in self.lines if text in line)


def test_the_walkthrough_runs_as_written_against_the_simulators(tmp_path: Path) -> None:
    simulators = subprocess.Popen(
        [sys.executable, "-m", "bridge.cli", "simulators", "--port", "0", "--job-seconds", "1-2"],
        env=user_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    server: subprocess.Popen[str] | None = None
    try:
        output = Output(simulators)
        output.wait_for("# Simulated jobs take")
        exports = dict(line.removeprefix("export ").strip().split("=", 1)
                       for line in output.lines if line.startswith("export "))
        assert sorted(exports) == sorted(
            f"BRIDGE_{p}_{v}" for p in ("AIRFORCE", "INFRAI", "APIXO", "VENICE")
            for v in ("BASE_URL", "API_KEY"))
        port = free_port()
        server = subprocess.Popen(  # in the walkthrough's directory: ./bridge.db
            [sys.executable, "-m", "bridge.cli", "serve", "--port", str(port)], cwd=tmp_path,
            env=user_env(**exports, BRIDGE_API_KEY=KEY, BRIDGE_ALLOW_PRIVATE_TARGETS="1",
                         BRIDGE_LOG_LEVEL="warning"),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while not _ready(base):
            assert server.poll() is None and time.monotonic() < deadline, "serve did not start"
            time.sleep(0.1)
        run_walkthrough(tmp_path, B=base, BRIDGE_API_KEY=KEY)
    finally:
        for process in (server, simulators):
            if process is not None:
                process.terminate()
                process.wait(timeout=20)
    assert simulators.returncode == 0  # Ctrl-C or SIGTERM ends it cleanly
    if simulators.stdout is not None:
        simulators.stdout.close()


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False
