"""``bridge serve`` with short leases, for the tests that SIGKILL it: ``python -m tests.serve
--port N``. Everything but the timings is ``bridge serve``'s own (settings from the
environment, uvicorn, the SQLite lock), so a killed process's work comes back in seconds
instead of after its two-minute job lease."""

from __future__ import annotations

import argparse
import os
import sys

from bridge.cli import serve
from bridge.logs import configure
from bridge.settings import Settings
from bridge.timings import Timings

SHORT = Timings(
    job_lease=10.0,  # a provider call to a simulator takes well under a second
    stream_hold=5.0,
    capacity_wait=5.0,
    poll_bounds=(1.0, 2.0),  # simulated jobs take a second, not minutes
    delivery_lease=5.0,
    delivery_timeout=3.0,  # above the slow receivers' 2 s
    record_margin=1.0,
)
COMMAND = [sys.executable, "-m", "tests.serve"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # for -m tests.serve


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.serve")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    configure(os.environ.get("BRIDGE_LOG_LEVEL", "INFO").strip().upper() or "INFO")
    return serve(Settings.from_env(), "127.0.0.1", args.port, timings=SHORT)


if __name__ == "__main__":
    sys.exit(main())
