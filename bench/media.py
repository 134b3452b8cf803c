"""Copying a provider's video into the media store: memory held and throughput, against a plain
aiohttp download of the same bytes in the same run.

    python bench/media.py [--megabytes 200] [--rounds 3] [--no-s3] [--no-fail]

Everything on 127.0.0.1. Two processes of their own serve: the file host simulator
(``bridge.simulators.files``: ``/files/bench.mp4?size=N``, a real MP4 padded with a ``free``
box, streamed 1 MiB at a time), and moto's S3 server. In this process, ``--rounds`` times, in
turns so that a change in the machine's speed weighs on all rows alike:

* ``aiohttp``: one ``aiohttp.ClientSession`` GETs the video and writes it to a file, 256 KiB
  at a time: the baseline;
* ``directory``: ``Fetcher.copy`` (the SSRF guard's resolver, the video check, the size cap,
  SHA-256) into a ``DirectoryStore``;
* ``s3``: the same into an ``S3Store`` on moto (multipart, 5 MiB parts);
* ``moto``: for context, ``S3Store.put`` of as many zeros made in memory: how fast moto takes
  the bytes at all, whatever the download.

Throughput is bytes over wall time; each ratio compares a copy's median with the baseline's.
Memory is this process's RSS, sampled every 2 ms by a thread, at its peak during a copy less
its level just before (the highest over the rounds). Targets: directory >= 0.7x and s3 >=
0.5x of the baseline, at most 32 MB more RSS. Exits 1 when one is missed, unless
``--no-fail``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

SCRIPT = os.path.abspath(__file__)
sys.path.insert(0, str(Path(SCRIPT).parent.parent))

MB = 1000 * 1000
MiB = 1024 * 1024
TARGETS = {"directory": 0.7, "s3": 0.5}
MAX_EXTRA_RSS = 32 * MB


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Peak:
    """The highest RSS seen while the block runs, less the RSS when it began."""

    def __init__(self) -> None:
        self.extra = 0

    def __enter__(self) -> Peak:
        self._base = rss()
        self._stop = threading.Event()
        self._high = self._base

        def sample() -> None:
            while not self._stop.wait(0.002):
                self._high = max(self._high, rss())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._high = max(self._high, rss())
        self.extra = self._high - self._base


async def wait_until_up(url: str, seconds: float = 20) -> None:
    import aiohttp

    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url) as answer:
                    await answer.read()
                    return
            except aiohttp.ClientError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-s3", action="store_true")
    parser.add_argument("--no-fail", action="store_true")
    args = parser.parse_args()
    host_port, moto_port = free_port(), free_port()
    host = subprocess.Popen([sys.executable, "-c", (
        "import uvicorn; from bridge.simulators.files import create_app; "
        f"uvicorn.run(create_app(), host='127.0.0.1', port={host_port}, log_level='warning')")],
        cwd=Path(SCRIPT).parent.parent)
    moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(moto_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return asyncio.run(measure(args, host_port, moto_port))
    finally:
        host.terminate()
        moto.terminate()
        host.wait()
        moto.wait()


async def measure(args: argparse.Namespace, host_port: int, moto_port: int) -> int:
    import aiohttp
    from aiobotocore.session import get_session

    from bridge.media import DirectoryStore, Fetcher, Mirrored, S3Store
    from bridge.targets import Guard

    size = args.megabytes * MB
    env = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull,
           "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    os.environ.update(env)
    endpoint = f"http://127.0.0.1:{moto_port}"
    url = f"http://127.0.0.1:{host_port}/files/bench.mp4?size={size}"
    work = Path(tempfile.mkdtemp(prefix="bench-media-"))
    await wait_until_up(f"http://127.0.0.1:{host_port}/files/up.mp4")
    if not args.no_s3:
        await wait_until_up(endpoint)
        async with get_session().create_client("s3", endpoint_url=endpoint) as s3:
            await s3.create_bucket(Bucket="bench")
    directory = DirectoryStore(work / "media")
    bucket = S3Store("bench", endpoint_url=endpoint)
    fetcher = Fetcher(Guard(allow_private=True))

    async def baseline() -> None:
        async with aiohttp.ClientSession() as session, session.get(url) as answer:
            # Written as DirectoryStore writes: a file descriptor, chunk by chunk.
            fd = os.open(work / "plain.mp4", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            with os.fdopen(fd, "wb") as out:
                async for chunk in answer.content.iter_chunked(256 * 1024):
                    out.write(chunk)
        (work / "plain.mp4").unlink()

    async def into(store: DirectoryStore | S3Store) -> None:
        result = await fetcher.copy(url, store, "bench")
        assert isinstance(result, Mirrored), result
        assert result.stored.size == size, result
        await store.delete(result.stored.key)

    async def zeros() -> AsyncIterator[bytes]:
        block = bytes(256 * 1024)
        for start in range(0, size, len(block)):
            yield block[:size - start]

    async def moto_pace() -> None:
        await bucket.put("zeros.mp4", zeros())
        await bucket.delete("zeros.mp4")

    rows: dict[str, Callable[[], Awaitable[None]]] = {
        "aiohttp": baseline, "directory": lambda: into(directory)}
    if not args.no_s3:
        rows.update({"s3": lambda: into(bucket), "moto": moto_pace})
    # Warm up: connections, the S3 model, first-touch allocations.
    small = f"http://127.0.0.1:{host_port}/files/warm.mp4?size={8 * MiB}"
    for store in ([directory] if args.no_s3 else [directory, bucket]):
        warm = await fetcher.copy(small, store, "warm")
        assert isinstance(warm, Mirrored), warm
    seconds: dict[str, list[float]] = {name: [] for name in rows}
    extra: dict[str, int] = {name: 0 for name in rows}
    for _ in range(args.rounds):
        for name, run in rows.items():
            with Peak() as peak:
                started = time.perf_counter()
                await run()
                seconds[name].append(time.perf_counter() - started)
            extra[name] = max(extra[name], peak.extra)
    await fetcher.close()
    await bucket.close()

    base = statistics.median(seconds["aiohttp"])
    print(f"{args.megabytes} MB, {args.rounds} rounds; median MB/s, ratio to aiohttp, "
          "extra RSS at peak")
    missed = []
    for name in rows:
        median = statistics.median(seconds[name])
        ratio = base / median
        target = TARGETS.get(name)
        verdict = "" if target is None else f" (target >= {target}x)"
        print(f"  {name:9} {size / median / MB:8.1f} MB/s  {ratio:5.2f}x{verdict}  "
              f"+{extra[name] / MB:.1f} MB RSS")
        if target is not None and ratio < target:
            missed.append(f"{name} throughput {ratio:.2f}x < {target}x")
        if name in TARGETS and extra[name] > MAX_EXTRA_RSS:
            missed.append(f"{name} held {extra[name] / MB:.1f} MB > {MAX_EXTRA_RSS / MB:.0f} MB")
    for line in missed:
        print(f"MISSED: {line}")
    return 1 if missed and not args.no_fail else 0


if __name__ == "__main__":
    sys.exit(main())
