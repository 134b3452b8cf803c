"""A start loads only what answering needs: the libraries a request may need later (provider
client, webhook client, templates, metrics, PostgreSQL, the request models, the OpenAPI
document, the simulators) are imported when first used. Checked in a fresh interpreter,
serving on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

LATER = ["aiohttp", "bridge.openapi", "bridge.providers.airforce", "bridge.schemas",
         "bridge.simulators", "httpx", "jinja2", "prometheus_client", "psycopg", "pydantic",
         "standardwebhooks"]

SCRIPT = """
import asyncio, json, sys
from bridge.app import create_app
from bridge.serving import serve_in_background
from bridge.settings import Settings

LATER = json.loads(sys.argv[1])

def loaded():
    return sorted(name for name in LATER if name in sys.modules)

async def main():
    async with serve_in_background(create_app(Settings.from_env())) as url:
        started = loaded()
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /healthz HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
        answer = await reader.read()
        writer.close()
        print(json.dumps({"status": answer.split(b" ")[1].decode(), "started": started,
                          "answered": loaded()}))

asyncio.run(main())
"""


def test_a_start_and_a_health_check_load_none_of_the_later_libraries(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env.update({
        "BRIDGE_DATABASE": str(tmp_path / "bridge.db"),
        "BRIDGE_MEDIA_DIR": str(tmp_path / "media"),
        # Providers configured: their adapters and client are made at the first job.
        "BRIDGE_VENICE_API_KEY": "test-key", "BRIDGE_VENICE_BASE_URL": "http://127.0.0.1:9",
        "BRIDGE_AIRFORCE_API_KEY": "test-key", "BRIDGE_AIRFORCE_BASE_URL": "http://127.0.0.1:9",
    })
    done = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(LATER)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["status"] == "200"
    assert seen["started"] == []
    # The answer's count in the metrics is kept once it is sent: that loads the client.
    assert seen["answered"] in ([], ["prometheus_client"])
