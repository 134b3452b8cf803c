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
from psycopg.conninfo import conninfo_to_dict

from bridge.api import routes
from bridge.settings import Settings, is_postgres
from tests.test_crash import free_port

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose"
PATHS = {getattr(route, "path", None) for route in routes}
TARGETS = ("docker", "compose", "fly", "render", "cloudrun", "lambda", "vercel")


class _CloudFormationLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags read as their long form: ``!Ref X`` as
    ``{"Ref": "X"}``, ``!If [...]`` as ``{"Fn::If": [...]}``."""


def _any_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {"Ref" if suffix == "Ref" else "Fn::" + suffix: value}


_CloudFormationLoader.add_multi_constructor("!", _any_tag)


class _Recording(dict[str, str]):
    """An environment that notes every name read from it."""

    def __init__(self) -> None:
        super().__init__()
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self.read.add(key)
        return super().get(key, default)


def _names_bridge_reads() -> set[str]:
    """Every BRIDGE_* variable that bridge.settings reads, and the command line's own."""
    environ = _Recording()
    Settings.from_env(environ)
    cli = (ROOT / "bridge" / "cli.py").read_text()
    return environ.read | set(re.findall(r'environ\.get\("(BRIDGE_[A-Z0-9_]+)"', cli))


def _bridge_names_in(text: str) -> set[str]:
    return set(re.findall(r"\bBRIDGE_[A-Z0-9_]*[A-Z0-9]\b", text))


def _recipe_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def _readme(target: str) -> str:
    return " ".join((DEPLOY / target / "README.md").read_text().split())


def test_every_target_has_a_readme_that_tells_the_storage_truth() -> None:
    for target in TARGETS:
        assert "storage" in _readme(target).lower(), target


def test_the_deploy_table_covers_both_stores_and_every_target() -> None:
    text = (DEPLOY / "README.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| target"))
    assert "SQLite" in header and "PostgreSQL" in header
    linked = set(re.findall(r"^\| \[[^]]+\]\(([a-z]+)/\)", text, re.MULTILINE))
    assert linked == set(TARGETS)
    truth = " ".join(text.replace("**", "").split())
    assert "one serving process" in truth and "any number of processes" in truth
    assert "needs no disk" in truth


def test_serverless_targets_keep_their_data_in_a_managed_postgresql() -> None:
    cloudrun, vercel, lambda_ = _readme("cloudrun"), _readme("vercel"), _readme("lambda")
    assert "Cloud SQL for PostgreSQL" in cloudrun and "fine for production" in cloudrun
    for text in (cloudrun, vercel):  # SQLite there is still a trial, and says so
        assert re.search(r"SQLite store [^.]*\*\*not for production\*\*", text), text[:80]
    assert "Neon" in vercel and "Supabase" in vercel
    assert "RDS" in lambda_ and "Aurora" in lambda_ and "Neon" in lambda_
    for text in (cloudrun, vercel, lambda_):
        assert "postgresql://" in text


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
    assert re.search(r"/healthz\b", by_name["HEALTHCHECK"][0]) and "/healthz" in PATHS


def test_the_image_installs_the_postgres_extra_so_it_runs_either_store() -> None:
    text = (DEPLOY / "docker" / "Dockerfile").read_text()
    installs = re.findall(r"^RUN pip install (.+)$", text, re.MULTILINE)
    extras = {extra for line in installs for group in re.findall(r"\.\[([a-z,]+)\]", line)
              for extra in group.split(",")}
    assert "postgres" in extras
    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert any(dep.startswith("psycopg") for dep in optional["postgres"])


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


def _cloud_run(name: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A Cloud Run service file's revision annotations, container, and env by name."""
    service = yaml.safe_load((DEPLOY / "cloudrun" / name).read_text())
    template = service["spec"]["template"]
    container = template["spec"]["containers"][0]
    return (template["metadata"]["annotations"], container,
            {e["name"]: e for e in container["env"]})


def test_cloud_run_service_ticks_from_cloud_scheduler() -> None:
    _, container, env = _cloud_run("service.yaml")
    assert env["BRIDGE_BACKGROUND"]["value"] == "off" and "BRIDGE_TICK_SECRET" in env
    assert container["livenessProbe"]["httpGet"]["path"] in PATHS
    job = yaml.safe_load((DEPLOY / "cloudrun" / "scheduler-job.yaml").read_text())
    assert job["httpTarget"]["uri"].endswith("/v1/tick") and "/v1/tick" in PATHS
    assert job["httpTarget"]["headers"]["Authorization"].startswith("Bearer ")


def test_cloud_run_always_on_keeps_the_cpu_and_an_instance_for_the_workers() -> None:
    annotations, _, env = _cloud_run("service-always-on.yaml")
    assert env["BRIDGE_BACKGROUND"]["value"] == "on" and "BRIDGE_TICK_SECRET" not in env
    assert annotations["run.googleapis.com/cpu-throttling"] == "false"
    assert int(annotations["autoscaling.knative.dev/minScale"]) >= 1


@pytest.mark.parametrize("name", ["service.yaml", "service-always-on.yaml"])
def test_cloud_run_runs_several_instances_on_cloud_sql(name: str) -> None:
    annotations, container, env = _cloud_run(name)
    assert int(annotations.get("autoscaling.knative.dev/maxScale", "100")) > 1
    # BRIDGE_DATABASE comes from Secret Manager; the README's URL names the mounted socket.
    assert env["BRIDGE_DATABASE"]["valueFrom"]["secretKeyRef"]["name"] == "bridge-database-url"
    readme = (DEPLOY / "cloudrun" / "README.md").read_text()
    assert "gcloud secrets create bridge-database-url" in readme
    socket = re.search(r"\?host=/cloudsql/([A-Za-z0-9_:-]+)", readme)
    assert socket is not None
    assert annotations["run.googleapis.com/cloudsql-instances"] == socket.group(1)
    assert int(env["BRIDGE_DATABASE_POOL"]["value"]) >= 1
    for probe in ("startupProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] in PATHS
    assert set(env) - {"PORT"} <= _names_bridge_reads()


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
    function = _sam_template()["Resources"]["BridgeFunction"]["Properties"]
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
    importlib.import_module(module_name)
    schedule = {"source": "aws.events", "detail-type": "Scheduled Event"}
    try:
        # A warm container serves HTTP, ticks, then serves HTTP again.
        first = handler(_function_url_event("/healthz"), _Context())
        counts = handler(schedule, None)
        answer = handler(_function_url_event("/healthz"), _Context())
        again = handler(schedule, None)
    finally:
        asyncio.get_event_loop_policy().get_event_loop().close()  # the handler's loop
        asyncio.set_event_loop(None)
    assert counts["finished"] is True and counts["jobs"] == 0 and again["finished"] is True
    assert first["statusCode"] == 200
    assert answer["statusCode"] == 200 and json.loads(answer["body"]) == {"status": "ok"}


def _sam_template() -> dict[str, Any]:
    template: dict[str, Any] = yaml.load((DEPLOY / "lambda" / "template.yaml").read_text(),
                                         Loader=_CloudFormationLoader)
    return template


def _tagged(value: Any, tag: str) -> list[Any]:
    """Every argument of ``tag`` (``Ref``, ``Fn::If``, ...) anywhere in ``value``."""
    if isinstance(value, dict):
        found = [value[tag]] if set(value) == {tag} else []
        return found + [arg for item in value.values() for arg in _tagged(item, tag)]
    if isinstance(value, list):
        return [arg for item in value for arg in _tagged(item, tag)]
    return []


def test_the_sam_template_takes_a_database_url_and_needs_neither_efs_nor_one_writer() -> None:
    template = _sam_template()
    parameter = template["Parameters"]["DatabaseUrl"]
    assert parameter["NoEcho"] is True and "Default" not in parameter
    function = template["Resources"]["BridgeFunction"]["Properties"]
    variables = function["Environment"]["Variables"]
    assert variables["BRIDGE_DATABASE"] == {"Ref": "DatabaseUrl"}
    assert "FileSystemConfigs" not in function
    assert function.get("ReservedConcurrentExecutions", 2) > 1
    # A VPC only when subnets are given (a private database).
    condition, in_vpc, outside = function["VpcConfig"]["Fn::If"]
    assert condition in template["Conditions"] and outside == {"Ref": "AWS::NoValue"}
    assert in_vpc["SubnetIds"] == {"Ref": "SubnetIds"}
    assert template["Parameters"]["SubnetIds"]["Default"] == ""
    names = (set(template["Parameters"]) | set(template["Resources"])
             | {"AWS::NoValue", "AWS::Region", "AWS::AccountId"})
    assert set(_tagged(template, "Ref")) <= names
    assert {args[0] for args in _tagged(template, "Fn::If")} <= set(template["Conditions"])
    assert set(variables) <= _names_bridge_reads()


def _compose_env() -> dict[str, str]:
    """deploy/compose/.env.example as compose reads a .env file."""
    env = {}
    for line in (COMPOSE / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            env[name.strip()] = value.strip()
    return env


_INTERPOLATION = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def _interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}`` and ``$$``."""
    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, argument = match.groups()
        value = env.get(name)
        missing = value is None or (value == "" and operator is not None
                                    and operator.startswith(":"))
        if operator is not None and operator.endswith("?"):
            assert not missing, f"{name}: {argument}"
        if missing and operator is not None and operator.endswith("-"):
            return argument
        assert value is not None, f"{name} is neither in .env.example nor has a default"
        return value

    return _INTERPOLATION.sub(one, text)


def _interpolated(value: Any, env: dict[str, str]) -> Any:
    if isinstance(value, str):
        return _interpolate(value, env)
    if isinstance(value, dict):
        return {key: _interpolated(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolated(item, env) for item in value]
    return value


def _compose(text: str | None = None) -> dict[str, Any]:
    """compose.yaml (or ``text``) as compose sees it with .env.example for its .env."""
    raw = yaml.safe_load(text if text is not None else (COMPOSE / "compose.yaml").read_text())
    config: dict[str, Any] = _interpolated(raw, _compose_env())
    return config


def _bridge_services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: service for name, service in config["services"].items()
            if service.get("command", [])[:2] == ["bridge", "serve"]}


def test_compose_runs_two_bridge_processes_on_one_postgres() -> None:
    config = _compose()
    services = config["services"]
    postgres = services["postgres"]
    assert postgres["image"] == "postgres:16-alpine"
    assert postgres["volumes"][0].split(":")[0] in config["volumes"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    bridges = _bridge_services(config)
    assert set(bridges) == {"bridge-1", "bridge-2"}
    urls = set()
    for service in bridges.values():
        build = service["build"]
        assert (COMPOSE / build["context"] / build["dockerfile"]).resolve() == (
            DEPLOY / "docker" / "Dockerfile")
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        env = {name: str(value) for name, value in service["environment"].items()}
        assert set(env) <= _names_bridge_reads()
        settings = Settings.from_env(env)  # every value is one bridge accepts
        assert is_postgres(settings.database)
        urls.add(settings.database)
        # Venice's videos: one volume for every process, where bridge keeps them.
        media = [v for v in service["volumes"] if v.endswith(":" + settings.media_dir)]
        assert media and media[0].split(":")[0] in config["volumes"]
    (url,) = urls  # the same database for both
    database = conninfo_to_dict(url)
    assert database["host"] == "postgres" and database["port"] == "5432"
    assert database["user"] == postgres["environment"]["POSTGRES_USER"]
    assert database["password"] == postgres["environment"]["POSTGRES_PASSWORD"]
    assert database["dbname"] == postgres["environment"]["POSTGRES_DB"]


def test_compose_puts_one_caddy_in_front_of_every_bridge_process() -> None:
    config = _compose()
    proxy = config["services"]["proxy"]
    assert proxy["image"] == "caddy:2-alpine"
    (published,) = proxy["ports"]
    mount = next(v for v in proxy["volumes"] if v.endswith(":/etc/caddy/Caddyfile:ro"))
    caddyfile = (COMPOSE / mount.split(":")[0]).read_text()
    lines = [line.strip() for line in caddyfile.splitlines()
             if line.strip() and not line.strip().startswith("#")]
    site = lines[0].removesuffix("{").strip()
    assert site == ":" + published.split(":")[-1]
    upstreams = re.search(r"^reverse_proxy ([^{]+)\{", "\n".join(lines), re.MULTILINE)
    assert upstreams is not None
    bridges = _bridge_services(config)
    ports = {name: service["command"][service["command"].index("--port") + 1]
             for name, service in bridges.items()}
    assert sorted(upstreams.group(1).split()) == sorted(f"{n}:{p}" for n, p in ports.items())
    health = re.search(r"^health_uri (\S+)$", "\n".join(lines), re.MULTILINE)
    assert health is not None and health.group(1) in PATHS
    assert set(proxy["depends_on"]) == set(bridges)


def test_compose_secrets_come_from_an_env_file_that_is_not_committed() -> None:
    text = (COMPOSE / "compose.yaml").read_text()
    used = {m.group(1) for m in _INTERPOLATION.finditer(text) if m.group(1)}
    assert used <= set(_compose_env())
    assert ".env" in (COMPOSE / ".gitignore").read_text().split()
    readme = (COMPOSE / "README.md").read_text()
    for command in ("docker compose -f deploy/compose/compose.yaml up -d --build",
                    "exec bridge-1 bridge keys create --tenant acme",
                    "cp deploy/compose/.env.example deploy/compose/.env"):
        assert command in readme


def test_every_bridge_variable_a_recipe_names_is_one_bridge_reads() -> None:
    known = _names_bridge_reads()
    readme = (ROOT / "README.md").read_text()
    texts = {str(path.relative_to(ROOT)): path.read_text() for path in _recipe_files()}
    for title in ("Configuration", "Scaling out"):
        texts[f"README.md, {title}"] = _section(readme, title)
    for where, text in texts.items():
        unknown = _bridge_names_in(text) - known
        assert not unknown, f"{where}: {sorted(unknown)}"


def test_every_postgresql_url_in_the_recipes_parses_and_is_accepted() -> None:
    found = 0
    for path in [*_recipe_files(), ROOT / "README.md"]:
        for found_url in re.findall(r"postgres(?:ql)?://[^\s`'\"]+", path.read_text()):
            url = found_url.rstrip(".,;:)")
            if "${" in url or ":port/" in url or url.endswith("://"):
                continue  # compose's, checked with its .env; or the form described
            found += 1
            assert conninfo_to_dict(url)["dbname"], url  # libpq's own parser
            assert Settings.from_env({"BRIDGE_DATABASE": url}).database == url
    assert found >= 6


def test_every_yaml_block_in_the_recipe_readmes_parses() -> None:
    for readme in DEPLOY.rglob("README.md"):
        for block in re.findall(r"```yaml\n(.*?)```", readme.read_text(), re.DOTALL):
            if "<<: *" in block:
                continue  # a fragment of compose.yaml, parsed in its place below
            assert yaml.safe_load(block), readme


def test_the_compose_readme_adds_a_third_process_that_caddy_then_reaches() -> None:
    readme = (COMPOSE / "README.md").read_text()
    section = _section(readme, "More processes")
    service = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert service is not None
    text = (COMPOSE / "compose.yaml").read_text().replace(
        "\nservices:\n", "\nservices:\n" + service.group(1), 1)
    bridges = _bridge_services(_compose(text))
    assert set(bridges) == {"bridge-1", "bridge-2", "bridge-3"}
    upstreams = re.search(r"reverse_proxy ([^{]+)\{", section)
    assert upstreams is not None
    assert sorted(upstreams.group(1).split()) == [f"{name}:8000" for name in sorted(bridges)]


def _section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else len(text)]


def test_the_readme_configuration_table_is_every_variable_bridge_reads() -> None:
    table = _section((ROOT / "README.md").read_text(), "Configuration")
    rows = re.findall(r"^\| `([A-Z0-9_<>]+)` \|", table, re.MULTILINE)
    named = {row.replace("<P>", provider.upper()) for row in rows
             for provider in ("airforce", "infrai", "apixo", "venice")}
    assert "BRIDGE_DATABASE" in named and "BRIDGE_DATABASE_POOL" in named
    assert named - {"BRIDGE_LOG_LEVEL"} == _names_bridge_reads() - {"BRIDGE_LOG_LEVEL"}
    database = next(line for line in table.splitlines() if line.startswith("| `BRIDGE_DATABASE`"))
    assert "SQLite" in database and "postgresql://" in database


def test_the_readme_says_how_to_scale_out_with_the_measured_figures() -> None:
    text = (ROOT / "README.md").read_text()
    scaling = _section(text, "Scaling out")
    assert "`python bench/scale.py`" in scaling and (ROOT / "bench" / "scale.py").is_file()
    for row in ("webhook deliveries per second", "apixo callbacks per second"):
        assert re.search(rf"\| {row} \|( [\d,]+ \|){{4}}", scaling), row
    assert "](deploy/compose/)" in scaling and (COMPOSE / "compose.yaml").is_file()
    for shared in ("FOR UPDATE SKIP LOCKED", "LISTEN/NOTIFY", "BRIDGE_DATABASE_POOL",
                   "per process", "`bridge tick`"):
        assert shared in scaling, shared
    # The newcomer's two commands stay first.
    assert text.split("```sh\n", 1)[1].split("```", 1)[0].splitlines() == [
        "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && bridge demo",
        ". .venv/bin/activate && pip install -e '.[test]' && python -m pytest -q",
    ]


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



