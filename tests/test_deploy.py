"""deploy/: every file parses, and every module, command, path and route it names exists,
imports or runs."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bridge.api import routes
from tests.test_crash import free_port

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PATHS = {getattr(route, "path", None) for route in routes}


class _CloudFormationLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags (!Ref, !GetAtt, ...) read as plain values."""


def _any_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    return loader.construct_mapping(node)  # type: ignore[arg-type]


_CloudFormationLoader.add_multi_constructor("!", _any_tag)


def test_every_target_has_a_readme_that_tells_the_storage_truth() -> None:
    for target in ("docker", "fly", "render", "cloudrun", "lambda", "vercel"):
        text = (DEPLOY / target / "README.md").read_text()
        assert "Storage" in text or "storage" in text, target
    for target in ("cloudrun", "vercel"):
        text = " ".join((DEPLOY / target / "README.md").read_text().split())
        assert "not for production" in text, target


def test_the_dockerfile_is_slim_non_root_healthchecked_with_data_on_a_volume() -> None:
    text = (DEPLOY / "docker" / "Dockerfile").read_text()
    instructions = [line.split(None, 1) for line in re.sub(r"\\\n", " ", text).splitlines()
                    if line.strip() and not line.startswith("#")]
    by_name: dict[str, list[str]] = {}
    for name, rest in instructions:
        by_name.setdefault(name, []).append(rest)
    assert by_name["FROM"][0].startswith("python:3.11-slim")
    assert by_name["USER"][-1] not in ("root", "0")
    assert "/healthz" in by_name["HEALTHCHECK"][0]
    assert "/data" in by_name["VOLUME"][0]
    assert "BRIDGE_DATABASE=/data/" in " ".join(by_name["ENV"])
    assert "bridge serve" in by_name["CMD"][0]
    for copy in by_name["COPY"]:
        for source in copy.split()[:-1]:
            assert (ROOT / source).exists(), source


def test_fly_toml_mounts_a_volume_where_the_database_lives() -> None:
    config = tomllib.loads((DEPLOY / "fly" / "fly.toml").read_text())
    assert (DEPLOY / "fly" / config["build"]["dockerfile"]).is_file()
    mount = config["mounts"][0]["destination"]
    assert config["env"]["BRIDGE_DATABASE"].startswith(mount + "/")
    assert config["http_service"]["checks"][0]["path"] in PATHS
    assert config["http_service"]["internal_port"] == int(config["env"]["PORT"])


def test_render_yaml_has_a_disk_where_the_database_lives() -> None:
    service = yaml.safe_load((DEPLOY / "render" / "render.yaml").read_text())["services"][0]
    assert (ROOT / service["dockerfilePath"]).is_file()
    env = {v["key"]: v.get("value") for v in service["envVars"]}
    assert env["BRIDGE_DATABASE"].startswith(service["disk"]["mountPath"] + "/")
    assert service["healthCheckPath"] in PATHS
    assert service["numInstances"] == 1


def test_cloud_run_service_ticks_from_cloud_scheduler() -> None:
    service = yaml.safe_load((DEPLOY / "cloudrun" / "service.yaml").read_text())
    container = service["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["BRIDGE_BACKGROUND"] == "off" and "BRIDGE_TICK_SECRET" in env
    assert container["livenessProbe"]["httpGet"]["path"] in PATHS
    job = yaml.safe_load((DEPLOY / "cloudrun" / "scheduler-job.yaml").read_text())
    assert job["httpTarget"]["uri"].endswith("/v1/tick") and "/v1/tick" in PATHS
    assert job["httpTarget"]["headers"]["Authorization"].startswith("Bearer ")


def test_vercel_json_crons_the_tick_and_its_entry_imports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = json.loads((DEPLOY / "vercel" / "vercel.json").read_text())
    assert config["crons"][0]["path"] == "/v1/tick"
    entry = DEPLOY / "vercel" / config["builds"][0]["src"]
    monkeypatch.setenv("BRIDGE_DATABASE", str(tmp_path / "b.db"))
    spec = importlib.util.spec_from_file_location("vercel_entry", entry)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert callable(module.app)


def test_the_sam_template_names_a_handler_that_serves_http_and_ticks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    template = yaml.load((DEPLOY / "lambda" / "template.yaml").read_text(),
                         Loader=_CloudFormationLoader)
    function = template["Resources"]["BridgeFunction"]["Properties"]
    module_name, _, attribute = function["Handler"].rpartition(".")
    handler = getattr(importlib.import_module(module_name), attribute)
    assert function["Environment"]["Variables"]["BRIDGE_BACKGROUND"] == "off"
    assert function["Events"]["Tick"]["Type"] == "Schedule"
    for name in list(os.environ):
        if name.startswith("BRIDGE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("BRIDGE_DATABASE", str(tmp_path / "b.db"))
    monkeypatch.setenv("BRIDGE_MEDIA_DIR", str(tmp_path / "media"))
    monkeypatch.setenv("BRIDGE_BACKGROUND", "off")
    module = importlib.import_module(module_name)
    schedule = {"source": "aws.events", "detail-type": "Scheduled Event"}
    try:
        # A warm container serves HTTP, ticks, then serves HTTP again.
        first = handler(_function_url_event("/healthz"), _Context())
        counts = handler(schedule, None)
        answer = handler(_function_url_event("/healthz"), _Context())
        again = handler(schedule, None)
    finally:
        module._loop.close()
        asyncio.set_event_loop(None)
    assert counts["finished"] is True and counts["jobs"] == 0 and again["finished"] is True
    assert first["statusCode"] == 200
    assert answer["statusCode"] == 200 and json.loads(answer["body"]) == {"status": "ok"}


def test_the_procfile_web_process_serves_on_port(tmp_path: Path) -> None:
    line = next(line for line in (ROOT / "Procfile").read_text().splitlines()
                if line.startswith("web:"))
    port = free_port()
    keep = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    bin_dir = str(Path(sys.executable).parent)
    env = {**keep, "PORT": str(port), "BRIDGE_DATABASE": str(tmp_path / "b.db"),
           "PATH": bin_dir + os.pathsep + keep.get("PATH", "")}
    process = subprocess.Popen(["sh", "-c", "exec " + line.split(":", 1)[1].strip()], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the web process did not serve on $PORT"
                time.sleep(0.2)
    finally:
        process.terminate()
        process.wait(timeout=20)
    assert shlex.split(line.split(":", 1)[1])[0] == "bridge"


class _Context:
    function_name = "bridge"
    aws_request_id = "test-request"


def _function_url_event(path: str) -> dict[str, Any]:
    return {
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "",
        "headers": {"host": "abc.lambda-url.us-east-1.on.aws", "x-forwarded-proto": "https",
                    "x-forwarded-port": "443"},
        "requestContext": {"http": {"method": "GET", "path": path, "protocol": "HTTP/1.1",
                                    "sourceIp": "127.0.0.1", "userAgent": "test"},
                           "domainName": "abc.lambda-url.us-east-1.on.aws",
                           "requestId": "r", "routeKey": "$default", "stage": "$default"},
        "isBase64Encoded": False,
    }



