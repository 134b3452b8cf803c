"""``BRIDGE_CONFIG``: endpoints from a TOML file, checked field by field and kept in step."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook

from bridge.config import ConfigError, load
from bridge.core import Bridge
from bridge.settings import Settings, SettingsError
from tests.conftest import Receiver, Sims, running_bridge

SECRET_A = "whsec_" + base64.b64encode(b"a" * 32).decode()
SECRET_B = "whsec_" + base64.b64encode(b"b" * 32).decode()


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def entry(url: str, tenant: str = "default", secret: str = SECRET_A, extra: str = "") -> str:
    return (f'[[endpoints]]\ntenant = "{tenant}"\nurl = "{url}"\nsecret = "{secret}"\n'
            f"{extra}\n")


@pytest.mark.parametrize(("text", "problem"), [
    ("[[endpoints]\n", "not valid TOML"),
    ("[hooks]\n", "unknown table or key 'hooks'"),
    ("endpoints = 3\n", "endpoints must be an array"),
    ('[[endpoints]]\nurl = "https://a.example.com"\nsecret = "x"\n', "endpoints[0].tenant"),
    ('[[endpoints]]\ntenant = "default"\nsecret = "x"\n', "endpoints[0].url"),
    (entry("http://a.example.com/x"), "endpoints[0].url: must be an https URL"),
    (entry("ftp://a.example.com/x"), "endpoints[0].url"),
    (entry("https://a.example.com/x", secret="not-whsec"), "endpoints[0].secret"),
    (entry("https://a.example.com/x", secret="whsec_!!!"), "endpoints[0].secret: not base64"),
    (entry("https://a.example.com/x", secret="whsec_" + base64.b64encode(b"s" * 8).decode()),
     "at least 24 random bytes"),
    (entry("https://a.example.com/x", extra='events = ["job.done"]'), "endpoints[0].events[0]"),
    (entry("https://a.example.com/x", extra="events = []"), "endpoints[0].events"),
    (entry("https://a.example.com/x", extra="colour = 1"), "endpoints[0].colour"),
    (entry("https://a.example.com/x", tenant="bad tenant"), "endpoints[0].tenant"),
    (entry("https://a.example.com/x") + entry("https://a.example.com/x"),
     "endpoints[1]: the same tenant and url appear twice"),
])
def test_a_bad_file_names_the_problem(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path / "c.toml", text), allow_private=False)
    assert problem in str(caught.value)
    with pytest.raises(SettingsError) as settings:
        Settings.from_env({"BRIDGE_CONFIG": str(tmp_path / "c.toml")})
    assert str(settings.value).startswith("BRIDGE_CONFIG: ")


def test_bridge_serve_refuses_a_bad_file_with_one_line(tmp_path: Path) -> None:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    path = write(tmp_path / "c.toml", entry("https://a.example.com/x", secret="whsec_short"))
    done = subprocess.run([sys.executable, "-m", "bridge.cli", "serve"], capture_output=True,
                          text=True, timeout=30, env={**keep, "BRIDGE_CONFIG": path,
                                                      "BRIDGE_DATABASE": str(tmp_path / "b.db")})
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "BRIDGE_CONFIG: endpoints[0].secret" in done.stderr
    assert "Traceback" not in done.stderr


async def test_the_database_follows_the_file_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    env = {"BRIDGE_DATABASE": str(tmp_path / "b.db"), "BRIDGE_MEDIA_DIR": str(tmp_path / "m"),
           "BRIDGE_CONFIG": str(path)}

    async def opened() -> list[dict[str, object]]:
        bridge = await Bridge.open(Settings.from_env(env))
        try:
            found = []
            for tenant in ("default", "acme"):
                page = await bridge.store.list_endpoints(tenant, limit=100, cursor=None)
                found += [{**e.to_json(), "tenant": e.tenant, "secret": e.secret,
                           "previous": e.previous_secret} for e in page.data]
            return found
        finally:
            await bridge.close()

    write(path, entry("https://a.example.com/1", extra='events = ["job.succeeded"]')
          + entry("https://a.example.com/2", tenant="acme", extra='description = "two"'))
    first = {e["url"]: e for e in await opened()}
    assert set(first) == {"https://a.example.com/1", "https://a.example.com/2"}
    assert first["https://a.example.com/1"]["events"] == ["job.succeeded"]
    assert first["https://a.example.com/2"]["tenant"] == "acme"

    assert {e["url"]: e for e in await opened()} == first  # unchanged file: nothing changes

    write(path, entry("https://a.example.com/1", secret=SECRET_B)
          + entry("https://a.example.com/3"))
    second = {e["url"]: e for e in await opened()}
    one = second["https://a.example.com/1"]
    assert one["id"] == first["https://a.example.com/1"]["id"]
    assert (one["secret"], one["previous"], one["events"]) == (SECRET_B, SECRET_A, None)
    two = second["https://a.example.com/2"]
    assert two["disabled"] is True and two["disabled_reason"] == "removed from BRIDGE_CONFIG"
    assert second["https://a.example.com/3"]["disabled"] is False

    write(path, entry("https://a.example.com/2", tenant="acme"))
    third = {e["url"]: e for e in await opened()}
    assert third["https://a.example.com/2"]["disabled"] is False
    assert third["https://a.example.com/2"]["id"] == two["id"]
    assert third["https://a.example.com/1"]["disabled"] is True


async def test_a_configured_endpoint_gets_webhooks_signed_with_its_secret(
    tmp_path: Path, sims: Sims, receiver: Receiver,
) -> None:
    path = write(tmp_path / "c.toml", entry(f"{receiver.url}/from-config",
                                            extra='events = ["job.succeeded"]'))
    async with running_bridge(tmp_path, sims, BRIDGE_CONFIG=path,
                              BRIDGE_ALLOW_PRIVATE_TARGETS="1") as harness:
        job = await harness.create({"provider": "apixo", "model": "veo-3-1", "prompt": "x"})
        await harness.wait(job["id"])
        got = await receiver.wait_for(lambda g: len(g) == 1)
    assert Webhook(SECRET_A).verify(got[0].body, got[0].headers)["data"]["id"] == job["id"]
