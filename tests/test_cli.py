"""The ``bridge`` command as a user runs it: a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.test_crash import free_port


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    return {**keep, "BRIDGE_DATABASE": str(tmp_path / "b.db"),
            "BRIDGE_MEDIA_DIR": str(tmp_path / "media"), **extra}


def test_demo_runs_one_job_per_provider_and_exits_0(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "bridge.cli", "demo", "--timeout", "120"],
                          env=_env(tmp_path), capture_output=True, text=True, timeout=180,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for provider in ("airforce", "infrai", "apixo", "venice"):
        assert "created job_" in out
        assert f"ok       {provider}: video" in out
    assert out.count("event job.succeeded") == 4
    assert "event job.submitted" in out
    assert "all four jobs succeeded" in out
    # The demo's receiver verified each job's terminal webhook with standardwebhooks.
    assert out.count("verified (webhook-id evt_") >= 4
    assert len([line for line in out.splitlines()
                if "webhook  job.succeeded" in line and "verified" in line]) == 4
    assert "REJECTED" not in out
    assert not (tmp_path / "bridge.db").exists()  # the demo keeps its files to itself
    # Not at a terminal and not asked to stay: no portal link, which could never work.
    assert "/portal/login/" not in out
    assert "bridge demo --stay 10m" in out


def test_demo_that_stays_prints_a_portal_link_that_signs_in(tmp_path: Path) -> None:
    demo = subprocess.Popen(
        [sys.executable, "-m", "bridge.cli", "demo", "--timeout", "120", "--stay", "2m"],
        env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        cwd=tmp_path)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(demo.stdout or ()), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 150
        while not any("/portal/login/" in line for line in lines):
            assert demo.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "no portal link:\n" + "".join(lines)
            time.sleep(0.2)
        link = next(line.strip() for line in lines if "/portal/login/" in line)
        assert "all four jobs succeeded" in "".join(lines)
        with httpx.Client(timeout=10) as browser:
            signed_in = browser.get(link)
            assert signed_in.status_code == 303
            jobs = browser.get(link.split("/portal/")[0] + "/portal")
        assert jobs.status_code == 200
        assert jobs.text.count('href="/portal/jobs/job_') == 4
    finally:
        demo.send_signal(signal.SIGINT)  # Ctrl-C ends the stay at once
        code = demo.wait(timeout=30)
        reader.join(timeout=5)
        if demo.stdout is not None:
            demo.stdout.close()
    assert code == 0, "".join(lines)
    assert "stopping" in lines[-1]


def _serve_until_ready(tmp_path: Path, **env: str) -> tuple[subprocess.Popen[str], str]:
    """``bridge serve`` on a free port, once ``/readyz`` answers 200; its base URL."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bridge.cli", "serve", "--port", str(port)],
        env=_env(tmp_path, **env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return server, base
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            server.kill()
            raise AssertionError("bridge serve did not start: " + server.communicate()[0])
        time.sleep(0.2)


def test_serve_answers_health_and_stops_cleanly(tmp_path: Path) -> None:
    server, base = _serve_until_ready(tmp_path, BRIDGE_API_KEY="brk_cli_test_key")
    try:
        me = httpx.get(f"{base}/v1/me", headers={"X-API-Key": "brk_cli_test_key"}, timeout=5)
        assert me.json()["tenant"] == "default"
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=20)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it (exit by that signal).
    assert "Application shutdown complete" in output, output
    assert "brk_cli_test_key" not in output  # keys never reach the logs
    assert "BRIDGE_ALLOW_PRIVATE_TARGETS" not in output  # the guard is on: nothing to warn of


def test_serve_warns_once_that_private_targets_are_allowed(tmp_path: Path) -> None:
    server, _ = _serve_until_ready(tmp_path, BRIDGE_ALLOW_PRIVATE_TARGETS="1")
    server.terminate()
    output, _ = server.communicate(timeout=20)
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    warnings = [line for line in lines if "BRIDGE_ALLOW_PRIVATE_TARGETS" in line["message"]]
    assert len(warnings) == 1, output
    assert warnings[0]["level"] == "warning"
    assert warnings[0]["message"] == (
        "BRIDGE_ALLOW_PRIVATE_TARGETS=1: webhooks may go over plain http and to loopback, "
        "private, link-local and cloud metadata addresses; use it for local development only")


def test_a_database_that_cannot_be_opened_stops_start_up_with_one_line(tmp_path: Path) -> None:
    closed = free_port()  # nothing listens there
    for database, says in (
        (f"postgresql://bridge:s3cret-pw@127.0.0.1:{closed}/bridge", "cannot open"),
        ("postgresql://bridge@127.0.0.1:not-a-port/bridge", "not a valid PostgreSQL URL"),
        ("mysql://bridge@127.0.0.1/bridge", "postgresql:// URL"),
        (str(tmp_path / "no" / "such" / "dir" / "x.db" / "y"), "cannot open"),
    ):
        (tmp_path / "no").mkdir(exist_ok=True)
        (tmp_path / "no" / "such").write_text("a file where a folder should be")
        for command in (["serve", "--port", str(free_port())], ["tick"]):
            done = subprocess.run([sys.executable, "-m", "bridge.cli", *command],
                                  env=_env(tmp_path, BRIDGE_DATABASE=database),
                                  capture_output=True, text=True, timeout=60)
            lines = done.stderr.strip().splitlines()
            assert done.returncode == 2, done.stderr
            assert len(lines) == 1 and lines[0].startswith(
                "bridge: configuration error: BRIDGE_DATABASE: "), lines
            assert says in lines[0]
            assert "s3cret-pw" not in done.stderr + done.stdout
