"""``bridge simulators``: the four provider simulators on loopback ports, until Ctrl-C, with
the lines that point a bridge at them."""

from __future__ import annotations

import contextlib
import sys

from bridge.serving import serve_in_background, until_interrupted
from bridge.simulators import FACTORIES, api_key, bridge_env
from bridge.simulators.base import SimSettings


async def serve_simulators(host: str, first_port: int, job_seconds: tuple[float, float]) -> int:
    """Serve each simulator on ``first_port``, the next port and so on (``0``: free ports)."""
    urls: dict[str, str] = {}
    async with contextlib.AsyncExitStack() as stack:
        for offset, (name, make) in enumerate(FACTORIES.items()):
            port = first_port + offset if first_port else 0
            app = make(SimSettings(api_key=api_key(name), duration=job_seconds, queue_delay=1.0))
            try:
                urls[name] = await stack.enter_async_context(serve_in_background(app, host, port))
            except OSError as exc:
                print(f"bridge: cannot listen on {host}:{port} for the {name} simulator: "
                      f"{exc.strerror or exc}", file=sys.stderr)
                return 2
        print(f"# The provider simulators serve on {host} until Ctrl-C. To point a bridge at "
              "them, run these where you start bridge serve:")
        for variable, value in bridge_env(urls).items():
            print(f"export {variable}={value}")
        print("# Simulated jobs take "
              f"{job_seconds[0]:g} to {job_seconds[1]:g} seconds.", flush=True)
        await until_interrupted()
    return 0
