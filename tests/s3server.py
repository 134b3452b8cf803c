"""A real S3-compatible server on loopback for the S3 media store's tests: moto's server mode
(ThreadedMotoServer) on a free port, with credentials for it in the standard AWS variables."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiobotocore.session import AioSession, get_session
from moto.server import ThreadedMotoServer

from bridge.serving import bind


@contextlib.contextmanager
def moto_server(tmp: Path) -> Iterator[str]:
    """Serve moto on 127.0.0.1 until the block ends; yields its endpoint URL. The AWS
    variables point botocore's standard chain at made-up keys (and at no file of this
    machine's)."""
    sock = bind()
    port = sock.getsockname()[1]
    sock.close()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "moto-test-key")
        env.setenv("AWS_SECRET_ACCESS_KEY", "moto-test-secret")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        env.setenv("AWS_CONFIG_FILE", str(tmp / "no-aws-config"))
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp / "no-aws-credentials"))
        env.delenv("AWS_PROFILE", raising=False)
        env.delenv("AWS_SESSION_TOKEN", raising=False)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.stop()


_session: list[AioSession] = []


@contextlib.asynccontextmanager
async def s3_client(endpoint: str) -> AsyncIterator[Any]:
    """A client of the test's own (not the store's), to look at the bucket."""
    if not _session:
        _session.append(get_session())
    async with _session[0].create_client("s3", endpoint_url=endpoint) as client:
        yield client


async def new_bucket(endpoint: str) -> str:
    name = f"media-{secrets.token_hex(4)}"
    async with s3_client(endpoint) as s3:
        await s3.create_bucket(Bucket=name)
    return name
