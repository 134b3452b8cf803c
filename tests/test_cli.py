"""The ``bridge`` command as a user runs it: a real process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.test_crash import free_port
from tests.test_walkthrough import run_walkthrough


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    return {**keep, "BRIDGE_DATABASE": str(tmp_path / "b.db"),
            "BRIDGE_MEDIA_DIR": str(tmp_path / "media"), **extra}


# Slow: the demo's simulated jobs take 6-12 s, as a user watching it sees them.
@pytest.mark.slow
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


# Slow: the demo's simulated jobs take 6-12 s, as a user watching it sees them.
@pytest.mark.slow
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
        # It says where it serves and with which key, as the line the walkthrough needs.
        exports = next(line.strip() for line in lines if line.strip().startswith("export B="))
        env = dict(pair.split("=", 1) for pair in exports.removeprefix("export ").split())
        assert env["BRIDGE_API_KEY"] in "".join(lines) and env["B"].startswith("http://")
        with httpx.Client(timeout=10) as browser:
            signed_in = browser.get(link)
            assert signed_in.status_code == 303
            jobs = browser.get(link.split("/portal/")[0] + "/portal")
        assert jobs.status_code == 200
        assert jobs.text.count('href="/portal/jobs/job_') == 4
        (tmp_path / "walk").mkdir()  # the walkthrough, against the demo's bridge
        run_walkthrough(tmp_path / "walk", **env)
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


FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}


@pytest.mark.parametrize(("trusted", "believed"), [
    (None, False), ("10.0.0.0/8", False), ("127.0.0.1", True), ("10.0.0.0/8, 127.0.0.0/8", True),
    ("*", True),
])
def test_forwarded_headers_are_believed_only_from_trusted_proxies(
    tmp_path: Path, trusted: str | None, believed: bool,
) -> None:
    env = {} if trusted is None else {"BRIDGE_TRUSTED_PROXIES": trusted}
    server, base = _serve_until_ready(tmp_path, **env)
    try:
        # A redirect's Location is built from the request's scheme: what the proxy said, or not.
        moved = httpx.get(f"{base}/healthz/", headers=FORWARDED, timeout=5)
    finally:
        server.terminate()
        server.communicate(timeout=20)
    assert moved.status_code == 307
    scheme = "https" if believed else "http"
    assert moved.headers["location"] == f"{scheme}://{base.split('://')[1]}/healthz"


def test_a_bad_trusted_proxy_stops_start_up_naming_the_variable(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "bridge.cli", "serve", "--port",
                           str(free_port())],
                          env=_env(tmp_path, BRIDGE_TRUSTED_PROXIES="127.0.0.1,proxy.internal"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "bridge: configuration error: BRIDGE_TRUSTED_PROXIES: 'proxy.internal' is not an IP "
        "address or CIDR network; expected e.g. 10.0.0.0/8,127.0.0.1 (or * to trust every peer)")


def test_a_database_that_cannot_be_opened_stops_start_up_with_one_line(tmp_path: Path) -> None:
    closed = free_port()  # nothing listens there
    for database, says in (
        (f"postgresql://bridge:s3cret-pw@127.0.0.1:{closed}/bridge", "cannot open"),
        ("postgresql://bridge@127.0.0.1:not-a-port/bridge", "not a valid PostgreSQL URL"),
        ("mysql://bridge@127.0.0.1/bridge", "postgresql:// URL"),
        (str(tmp_path / "no" / "such" / "dir" / "x.db" / "y"), "does not exist"),
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


def _bridge(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge.cli", *args], cwd=cwd, env=env or None,
                          capture_output=True, text=True, timeout=60)


def test_version_and_every_help_describe_the_options_with_defaults() -> None:
    version = _bridge("--version")
    assert version.returncode == 0 and version.stdout.strip() == "bridge 0.1.0"
    commands = [["serve"], ["demo"], ["simulators"], ["keys"], ["keys", "create"],
                ["keys", "list"], ["keys", "revoke"], ["portal-link"], ["tick"]]
    top = _bridge("--help")
    for command in [[], *commands]:
        shown = _bridge(*command, "--help")
        assert shown.returncode == 0, shown.stderr
        assert "``" not in shown.stdout and ":class:" not in shown.stdout  # no reST
        options = re.findall(r"^  (--[a-z-]+)(?: [A-Z_]+)?(.*)$", shown.stdout, re.MULTILINE)
        for name, text in options:
            assert name in ("--help", "--version") or text.strip() or name == "--job-seconds", \
                f"{command} {name} has no description"
        for option, default in re.findall(r"(--[a-z-]+) [A-Z_]+\s+(?:.|\n)*?\(default: ([^)]*)\)",
                                          shown.stdout):
            assert default, option
        if command:
            assert command[-1] in top.stdout or command[0] in top.stdout
    serve = _bridge("serve", "--help").stdout
    assert "(default: $PORT, else 8000)" in serve and "(default: $HOST, else 127.0.0.1)" in serve
    assert "(default: 15m)" in _bridge("portal-link", "--help").stdout
    assert "(default: 8101)" in _bridge("simulators", "--help").stdout


def test_every_command_that_opens_a_database_says_which(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    made = _bridge("keys", "create", "--tenant", "acme", cwd=elsewhere, **env)
    assert made.returncode == 0, made.stderr
    assert made.stderr.strip() == f"bridge: database {elsewhere / 'bridge.db'} (SQLite)"
    assert json.loads(made.stdout)["tenant"] == "acme"
    listed = _bridge("keys", "list", cwd=elsewhere, **env)
    assert str(elsewhere / "bridge.db") in listed.stderr
    assert str(elsewhere / "bridge.db") in _bridge("tick", cwd=elsewhere, **env).stderr


def test_a_sqlite_path_in_a_missing_directory_is_an_error_and_nothing_is_made(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "typo" / "bridge.db"
    for command in (["keys", "create", "--tenant", "acme"], ["serve"], ["tick"]):
        done = _bridge(*command, **_env(tmp_path, BRIDGE_DATABASE=str(missing)))
        assert done.returncode == 2
        assert done.stderr.strip().splitlines() == [
            f"bridge: configuration error: BRIDGE_DATABASE: the directory "
            f"'{missing.parent}' does not exist (bridge creates the file, not its directory)"]
    assert not missing.parent.exists()


def test_serve_logs_one_start_up_line_of_what_it_uses(tmp_path: Path) -> None:
    server, _ = _serve_until_ready(tmp_path, BRIDGE_INFRAI_API_KEY="ifr_secret_key_x",
                                   BRIDGE_PUBLIC_URL="https://bridge.example.com")
    server.terminate()
    output, _ = server.communicate(timeout=20)
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    [start] = [line for line in lines if line["message"] == "bridge serving"]
    assert start["database"] == f"{tmp_path / 'b.db'} (SQLite)"
    assert start["providers"] == ["infrai"]
    assert start["public_url"] == "https://bridge.example.com"
    assert start["media_store"] == str(tmp_path / "media")
    assert "ifr_secret_key_x" not in output


def test_serve_masks_a_postgresql_password_in_its_start_up_line(tmp_path: Path) -> None:
    from tests.postgres import new_database

    if not os.environ.get("BRIDGE_TEST_POSTGRES"):
        pytest.skip("PostgreSQL tests need BRIDGE_TEST_POSTGRES")
    with new_database() as url:  # trust auth: the password is never checked
        with_password = url.replace("://postgres@", "://postgres:pg-s3cret@")
        assert with_password != url
        server, _ = _serve_until_ready(tmp_path, BRIDGE_DATABASE=with_password)
        server.terminate()
        output, _ = server.communicate(timeout=20)
    assert "pg-s3cret" not in output
    start = next(json.loads(line) for line in output.splitlines() if '"bridge serving"' in line)
    assert start["database"] == with_password.replace("pg-s3cret", "***")


def test_a_port_in_use_or_out_of_range_is_one_line_and_exit_2(tmp_path: Path) -> None:
    server, base = _serve_until_ready(tmp_path)
    try:
        port = base.rsplit(":", 1)[1]
        other = tmp_path / "other"
        other.mkdir()
        taken = _bridge("serve", "--port", port, **_env(other))
        assert taken.returncode == 2
        assert taken.stderr.splitlines() == [
            f"bridge: cannot listen on 127.0.0.1:{port}: Address already in use"]
        # A second serve on the same SQLite file is refused before it listens.
        second = _bridge("serve", "--port", str(free_port()), **_env(tmp_path))
        assert second.returncode == 2
        assert second.stderr.splitlines() == [
            f"bridge: another bridge serve is using {tmp_path / 'b.db'}; a SQLite database "
            "takes one serving process (PostgreSQL takes many)"]
    finally:
        server.terminate()
        server.communicate(timeout=20)
    huge = _bridge("serve", "--port", "99999", **_env(tmp_path))
    assert huge.returncode == 2
    assert huge.stderr.splitlines() == ["bridge: --port must be from 1 to 65535, got 99999"]
