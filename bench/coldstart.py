"""Cold start: ``bridge serve`` against a bare Starlette + uvicorn app, spawn to first 200.

    python bench/coldstart.py [--runs 7] [--fresh]

Each run spawns one process, then polls ``GET /healthz`` on 127.0.0.1 in a tight loop (a new
connection each try, 1 ms apart) until it answers 200. Wall: from just before the spawn to
that answer. CPU: the child's user + system time at that moment (from /proc, in clock
ticks). The two kinds are spawned alternately, ``--runs`` times each, after one warm-up run
of each (not counted: it fills the file cache, writes the bytecode that an installed package
comes with, and makes the bridge's SQLite file, whose schema is then current as on any later
start; ``--fresh`` gives every bridge run a new file instead). Prints each kind's medians
and their ratio (bridge / bare). Only loopback; every child is stopped after its run, and a
child that does not answer within ``--deadline`` seconds ends the benchmark.

The bridge runs as ``python -m bridge.cli serve`` with a SQLite file in a temporary
directory, BRIDGE_BACKGROUND at its default, and an API key for each of the four providers
(base URLs on 127.0.0.1, where nothing listens: a start contacts no provider, and the
simulators are not started). The bare app is ``bench/coldstart_bare.py``, one ``/healthz``
route under ``uvicorn.run``.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BARE = Path(__file__).with_name("coldstart_bare.py")
TICKS = os.sysconf("SC_CLK_TCK")
PROVIDER_KEYS = {
    f"BRIDGE_{name}_{part}": value
    for name in ("AIRFORCE", "INFRAI", "APIXO", "VENICE")
    for part, value in (("API_KEY", "bench-key-not-used"), ("BASE_URL", "http://127.0.0.1:9"))
}
REQUEST = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers_200(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(REQUEST)
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a running process (fields 14 and 15 of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def one_run(command: list[str], env: dict[str, str], port: int,
            deadline: float) -> tuple[float, float]:
    """(wall, cpu) seconds from spawning ``command`` to its first 200 on ``/healthz``."""
    started = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    try:
        while not answers_200(port):
            if child.poll() is not None:
                raise SystemExit(f"{command[1:3]} exited {child.returncode}: "
                                 f"{child.stderr.read().decode() if child.stderr else ''}")
            if time.perf_counter() - started > deadline:
                raise SystemExit(f"{command[1:3]} did not answer in {deadline} s")
            time.sleep(0.001)
        wall = time.perf_counter() - started
        cpu = cpu_seconds(child.pid)
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return wall, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="runs of each kind (at least 5)")
    parser.add_argument("--fresh", action="store_true",
                        help="a new SQLite file for every bridge run")
    parser.add_argument("--deadline", type=float, default=20.0,
                        help="seconds a child may take to answer")
    args = parser.parse_args()
    if args.runs < 5:
        parser.error("--runs must be at least 5")

    results: dict[str, list[tuple[float, float]]] = {"bare": [], "bridge": []}
    with tempfile.TemporaryDirectory(prefix="coldstart-") as tmp:
        # Bytecode is written and then used, as an installed package has it (pip compiles
        # at install): the warm-up runs write what PYTHONDONTWRITEBYTECODE would withhold.
        base_env = {k: v for k, v in os.environ.items()
                    if not k.startswith("BRIDGE_") and not k.endswith("_API_KEY")
                    and k != "PYTHONDONTWRITEBYTECODE"}

        def spawn(kind: str, number: int) -> tuple[float, float]:
            port = free_port()
            if kind == "bare":
                return one_run([sys.executable, str(BARE), str(port)], base_env, port,
                               args.deadline)
            database = Path(tmp, f"bridge-{number}.db" if args.fresh else "bridge.db")
            env = {**base_env, "BRIDGE_DATABASE": str(database),
                   "BRIDGE_MEDIA_DIR": str(Path(tmp, "media")), "BRIDGE_LOG_LEVEL": "WARNING",
                   **PROVIDER_KEYS}
            return one_run([sys.executable, "-m", "bridge.cli", "serve", "--port", str(port)],
                           env, port, args.deadline)

        spawn("bare", -1)
        spawn("bridge", -1)
        for number in range(args.runs):
            for kind in ("bare", "bridge") if number % 2 == 0 else ("bridge", "bare"):
                results[kind].append(spawn(kind, number))

    medians = {kind: (statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs))
               for kind, runs in results.items()}
    print(f"{'':8}{'wall median':>14}{'cpu median':>14}   runs (wall s)")
    for kind, (wall, cpu) in medians.items():
        runs = " ".join(f"{w:.3f}" for w, _ in results[kind])
        print(f"{kind:8}{wall:>12.3f} s{cpu:>12.3f} s   {runs}")
    (bare_wall, bare_cpu), (bridge_wall, bridge_cpu) = medians["bare"], medians["bridge"]
    print(f"ratio   {bridge_wall / bare_wall:>12.2f} x{bridge_cpu / bare_cpu:>12.2f} x"
          f"   (bridge / bare; --fresh: {args.fresh})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
