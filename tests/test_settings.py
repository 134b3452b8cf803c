"""Configuration from the environment (SPEC section 2), and how the CLI reports it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bridge.core import hash_key
from bridge.settings import Secret, Settings, SettingsError, parse_duration
from bridge.store import open_store

SECRETS = {
    "BRIDGE_SECRET_KEY": "secret-key-0123456789abcdef",
    "BRIDGE_API_KEY": "brk_bootstrap_0123456789",
    "BRIDGE_TICK_SECRET": "tick-secret-0123456789",
    "BRIDGE_METRICS_TOKEN": "metrics-token-0123456789",
    "BRIDGE_AIRFORCE_API_KEY": "sk-air-0123456789",
    "BRIDGE_INFRAI_API_KEY": "sk-infrai-0123456789",
    "BRIDGE_APIXO_API_KEY": "sk-apixo-0123456789",
    "BRIDGE_VENICE_API_KEY": "sk-venice-0123456789",
}


# -- defaults ---------------------------------------------------------------------------------


def test_defaults_are_the_ones_the_spec_names() -> None:
    settings = Settings.from_env({})
    assert {
        "database": settings.database,
        "public_url": settings.public_url,
        "secret_key": settings.secret_key,
        "api_key": settings.api_key,
        "tick_secret": settings.tick_secret,
        "metrics_token": settings.metrics_token,
        "background": settings.background,
        "retry_schedule": settings.retry_schedule,
        "allow_private_targets": settings.allow_private_targets,
        "confirm_callbacks": settings.confirm_callbacks,
        "media_dir": settings.media_dir,
        "config": settings.config,
        "request_timeout": settings.request_timeout,
        "max_connections": settings.max_connections,
        "trusted_proxies": settings.trusted_proxies,
    } == {
        "database": "./bridge.db",
        "public_url": "http://127.0.0.1:8000",
        "secret_key": None,
        "api_key": None,
        "tick_secret": None,
        "metrics_token": None,
        "background": True,
        "retry_schedule": (5, 300, 1800, 7200, 18000, 36000, 36000),
        "allow_private_targets": False,
        "confirm_callbacks": True,
        "media_dir": "./media",
        "config": None,
        "request_timeout": 30.0,
        "max_connections": None,  # sized to the open-file limit by bridge serve
        "trusted_proxies": (),
    }


def test_default_provider_base_urls_are_the_ones_the_spec_names() -> None:
    settings = Settings.from_env({})
    assert {name: p.base_url for name, p in settings.providers.items()} == {
        "airforce": "https://api.airforce",
        "infrai": "https://api.infrai.cc",
        "apixo": "https://api.apixo.ai",
        "venice": "https://api.venice.ai/api/v1",
    }


def test_no_provider_is_enabled_without_keys() -> None:
    assert Settings.from_env({}).enabled_providers == []


# -- every variable is read ------------------------------------------------------------------


def _secret(value: Secret | None) -> str | None:
    return None if value is None else value.reveal()


def _provider(name: str, attribute: str) -> Any:
    def read(settings: Settings) -> Any:
        value = getattr(settings.providers[name], attribute)
        return _secret(value) if isinstance(value, Secret) else value

    return read


READ_CASES = [
    ("BRIDGE_DATABASE", "/tmp/b.db", lambda s: s.database, "/tmp/b.db"),  # its folder exists
    ("BRIDGE_PUBLIC_URL", "https://bridge.example.com/", lambda s: s.public_url,
     "https://bridge.example.com"),
    ("BRIDGE_SECRET_KEY", SECRETS["BRIDGE_SECRET_KEY"], lambda s: _secret(s.secret_key),
     SECRETS["BRIDGE_SECRET_KEY"]),
    ("BRIDGE_API_KEY", SECRETS["BRIDGE_API_KEY"], lambda s: _secret(s.api_key),
     SECRETS["BRIDGE_API_KEY"]),
    ("BRIDGE_TICK_SECRET", SECRETS["BRIDGE_TICK_SECRET"], lambda s: _secret(s.tick_secret),
     SECRETS["BRIDGE_TICK_SECRET"]),
    ("BRIDGE_METRICS_TOKEN", SECRETS["BRIDGE_METRICS_TOKEN"], lambda s: _secret(s.metrics_token),
     SECRETS["BRIDGE_METRICS_TOKEN"]),
    ("BRIDGE_BACKGROUND", "off", lambda s: s.background, False),
    ("BRIDGE_RETRY_SCHEDULE", "1s,2m,1h", lambda s: s.retry_schedule, (1, 120, 3600)),
    ("BRIDGE_ALLOW_PRIVATE_TARGETS", "1", lambda s: s.allow_private_targets, True),
    ("BRIDGE_CONFIRM_CALLBACKS", "0", lambda s: s.confirm_callbacks, False),
    ("BRIDGE_MEDIA_DIR", "/data/media", lambda s: s.media_dir, "/data/media"),
    ("BRIDGE_MEDIA_DIR", "/data/media", lambda s: s.media_store, "/data/media"),
    ("BRIDGE_MEDIA_STORE", "/srv/videos", lambda s: s.media_store, "/srv/videos"),
    ("BRIDGE_MEDIA_STORE", "s3://my-bucket/videos/", lambda s: s.media_store,
     "s3://my-bucket/videos"),
    ("BRIDGE_MEDIA_MAX_BYTES", "500MB", lambda s: s.media_max_bytes, 500_000_000),
    ("BRIDGE_MEDIA_MAX_BYTES", "64KiB", lambda s: s.media_max_bytes, 65536),
    ("BRIDGE_MEDIA_MAX_BYTES", "1048576", lambda s: s.media_max_bytes, 1048576),
    ("BRIDGE_SHUTDOWN_GRACE", "30s", lambda s: s.shutdown_grace, 30.0),
    ("BRIDGE_SHUTDOWN_GRACE", "0", lambda s: s.shutdown_grace, 0.0),
    ("BRIDGE_REQUEST_TIMEOUT", "10s", lambda s: s.request_timeout, 10.0),
    ("BRIDGE_REQUEST_TIMEOUT", "500ms", lambda s: s.request_timeout, 0.5),
    ("BRIDGE_MAX_CONNECTIONS", "2000", lambda s: s.max_connections, 2000),
    ("BRIDGE_TRUSTED_PROXIES", " 10.0.0.0/8, 127.0.0.1,::1 ", lambda s: s.trusted_proxies,
     ("10.0.0.0/8", "127.0.0.1", "::1")),
    ("BRIDGE_TRUSTED_PROXIES", "*", lambda s: s.trusted_proxies, ("*",)),
    *[
        (f"BRIDGE_{name.upper()}_API_KEY", SECRETS[f"BRIDGE_{name.upper()}_API_KEY"],
         _provider(name, "api_key"), SECRETS[f"BRIDGE_{name.upper()}_API_KEY"])
        for name in ("airforce", "infrai", "apixo", "venice")
    ],
    *[
        (f"BRIDGE_{name.upper()}_BASE_URL", "http://127.0.0.1:9001/", _provider(name, "base_url"),
         "http://127.0.0.1:9001")
        for name in ("airforce", "infrai", "apixo", "venice")
    ],
]


@pytest.mark.parametrize(("variable", "value", "read", "expected"), READ_CASES,
                         ids=[case[0] for case in READ_CASES])
def test_every_variable_is_read(variable: str, value: str, read: Any, expected: Any) -> None:
    assert read(Settings.from_env({variable: value})) == expected


def test_the_media_store_is_a_directory_of_2_gib_videos_by_default() -> None:
    settings = Settings.from_env({})
    assert (settings.media_store, settings.s3_endpoint_url, settings.media_max_bytes) == (
        "./media", None, 2 * 1024**3)


def test_an_s3_endpoint_is_read_with_an_s3_store() -> None:
    settings = Settings.from_env({"BRIDGE_MEDIA_STORE": "s3://media",
                                  "BRIDGE_S3_ENDPOINT_URL": "https://x.r2.cloudflarestorage.com/"})
    assert settings.s3_endpoint_url == "https://x.r2.cloudflarestorage.com"


@pytest.mark.parametrize(("env", "message"), [
    ({"BRIDGE_MEDIA_STORE": "gs://bucket"},
     "BRIDGE_MEDIA_STORE: expected a directory path or s3://bucket[/prefix], got a gs:// URL"),
    ({"BRIDGE_MEDIA_STORE": "s3://My_Bucket"}, "BRIDGE_MEDIA_STORE: 'My_Bucket' is not a valid "
     "bucket name (3 to 63 lower-case letters, digits, dots and hyphens)"),
    ({"BRIDGE_MEDIA_STORE": "s3://"}, "BRIDGE_MEDIA_STORE: '' is not a valid bucket name"),
    ({"BRIDGE_MEDIA_STORE": "s3://bucket/a?b"}, "BRIDGE_MEDIA_STORE: the prefix after the "
     "bucket must be a plain path"),
    ({"BRIDGE_S3_ENDPOINT_URL": "http://127.0.0.1:9000"},
     "BRIDGE_S3_ENDPOINT_URL: set, but BRIDGE_MEDIA_STORE is not an s3://bucket URL"),
    ({"BRIDGE_MEDIA_STORE": "s3://bucket", "BRIDGE_S3_ENDPOINT_URL": "minio:9000"},
     "BRIDGE_S3_ENDPOINT_URL: expected an http(s) URL"),
    ({"BRIDGE_MEDIA_MAX_BYTES": "2 gigs"},
     "BRIDGE_MEDIA_MAX_BYTES: not a size: '2 gigs'; expected e.g. 2GiB or 500MB"),
    ({"BRIDGE_MEDIA_MAX_BYTES": "0"}, "BRIDGE_MEDIA_MAX_BYTES: must be more than 0"),
])
def test_a_bad_media_store_setting_names_its_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(env)
    assert str(raised.value).startswith(message)


def test_bridge_config_names_an_existing_file(tmp_path: Path) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text("# no endpoints yet\n")
    assert Settings.from_env({"BRIDGE_CONFIG": str(config)}).config == str(config)


@pytest.mark.parametrize(("value", "expected"), [
    ("on", True), ("ON", True), ("1", True), ("true", True), ("yes", True),
    ("off", False), ("0", False), ("false", False), ("no", False), (" off ", False),
])
def test_switches_read_on_and_off_words(value: str, expected: bool) -> None:
    assert Settings.from_env({"BRIDGE_BACKGROUND": value}).background is expected


@pytest.mark.parametrize(("text", "seconds"), [
    ("5", 5.0), ("5s", 5.0), ("250ms", 0.25), ("5m", 300.0), ("2h", 7200.0), ("1d", 86400.0),
    ("1.5s", 1.5), (" 10h ", 36000.0),
])
def test_parse_duration_reads_units(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_blank_values_count_as_unset() -> None:
    settings = Settings.from_env({"BRIDGE_DATABASE": "  ", "BRIDGE_BACKGROUND": "",
                                  "BRIDGE_API_KEY": " "})
    assert (settings.database, settings.background, settings.api_key) == (
        "./bridge.db", True, None)


# -- providers -------------------------------------------------------------------------------


def test_a_provider_with_a_key_is_enabled() -> None:
    settings = Settings.from_env({"BRIDGE_VENICE_API_KEY": "sk-venice"})
    assert [p.name for p in settings.enabled_providers] == ["venice"]


@pytest.mark.parametrize("key", [None, "", "   "])
def test_a_provider_without_a_key_is_disabled(key: str | None) -> None:
    env = {"BRIDGE_VENICE_API_KEY": "sk-venice"}
    if key is not None:
        env["BRIDGE_AIRFORCE_API_KEY"] = key
    settings = Settings.from_env(env)
    assert settings.providers["airforce"].enabled is False
    assert settings.providers["airforce"].api_key is None


# -- invalid values --------------------------------------------------------------------------

INVALID = [
    ("BRIDGE_BACKGROUND", "maybe"),
    ("BRIDGE_ALLOW_PRIVATE_TARGETS", "2"),
    ("BRIDGE_CONFIRM_CALLBACKS", "sometimes"),
    ("BRIDGE_RETRY_SCHEDULE", "5x"),
    ("BRIDGE_RETRY_SCHEDULE", "5s,soon"),
    ("BRIDGE_RETRY_SCHEDULE", ","),
    ("BRIDGE_RETRY_SCHEDULE", "0s"),
    ("BRIDGE_RETRY_SCHEDULE", "-5s"),
    ("BRIDGE_SHUTDOWN_GRACE", "soon"),
    ("BRIDGE_SHUTDOWN_GRACE", "1h"),
    ("BRIDGE_REQUEST_TIMEOUT", "soon"),
    ("BRIDGE_REQUEST_TIMEOUT", "0s"),
    ("BRIDGE_REQUEST_TIMEOUT", "1h"),
    ("BRIDGE_MAX_CONNECTIONS", "0"),
    ("BRIDGE_MAX_CONNECTIONS", "many"),
    ("BRIDGE_TRUSTED_PROXIES", "proxy.internal"),
    ("BRIDGE_TRUSTED_PROXIES", "10.0.0.0/33"),
    ("BRIDGE_TRUSTED_PROXIES", "127.0.0.1,*"),
    ("BRIDGE_PUBLIC_URL", "ftp://x"),
    ("BRIDGE_PUBLIC_URL", "localhost:8000"),
    ("BRIDGE_PUBLIC_URL", "http://"),
    ("BRIDGE_AIRFORCE_BASE_URL", "not-a-url"),
    ("BRIDGE_INFRAI_BASE_URL", "ftp://api.infrai.cc"),
    ("BRIDGE_APIXO_BASE_URL", "api.apixo.ai"),
    ("BRIDGE_VENICE_BASE_URL", "https://"),
    ("BRIDGE_CONFIG", "/no/such/file"),
    ("BRIDGE_API_KEY", "Qz7&k"),
    ("BRIDGE_SECRET_KEY", "Wq8*Lm2^Pv"),
    ("BRIDGE_TICK_SECRET", "Tk4%z"),
    ("BRIDGE_METRICS_TOKEN", "Mt5#q"),
]


@pytest.mark.parametrize(("variable", "value"), INVALID,
                         ids=[f"{variable}={value}" for variable, value in INVALID])
def test_an_invalid_value_is_refused_naming_its_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({**SECRETS, variable: value})
    assert str(caught.value).startswith(f"{variable}:")


@pytest.mark.parametrize(("variable", "value"), INVALID,
                         ids=[f"{variable}={value}" for variable, value in INVALID])
def test_an_invalid_value_never_shows_a_secret(variable: str, value: str) -> None:
    env = {**SECRETS, variable: value}
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    secrets = [env[name] for name in SECRETS]
    message = str(caught.value)
    assert not [secret for secret in secrets if secret in message]


def test_a_directory_is_not_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"^BRIDGE_CONFIG:"):
        Settings.from_env({"BRIDGE_CONFIG": str(tmp_path)})


def test_settings_never_show_secrets() -> None:
    settings = Settings.from_env(SECRETS)
    shown = repr(settings) + str(settings)
    assert not [secret for secret in SECRETS.values() if secret in shown]


@pytest.mark.parametrize("show", [repr, str, format])
def test_secret_hides_its_value(show: Any) -> None:
    assert "hunter2-secret" not in show(Secret("hunter2-secret"))


def test_secret_reveals_its_value_when_asked() -> None:
    assert Secret("hunter2-secret").reveal() == "hunter2-secret"


# -- the command line --------------------------------------------------------------------------


def run_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge.cli", *args],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_serve_with_an_invalid_value_exits_2_with_one_line(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "serve", BRIDGE_BACKGROUND="maybe")
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert "BRIDGE_BACKGROUND" in lines[0]
    assert "Traceback" not in done.stderr


def test_serve_with_a_short_secret_never_prints_it(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "serve", BRIDGE_TICK_SECRET="Zq9x!")
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert "BRIDGE_TICK_SECRET" in done.stderr
    assert "Zq9x!" not in done.stderr + done.stdout


def test_serve_with_an_invalid_log_level_exits_2_with_one_line(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "serve", BRIDGE_LOG_LEVEL="loud")
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert "BRIDGE_LOG_LEVEL" in done.stderr


async def _tenant_for(database: Path, key: str) -> str | None:
    store = await open_store(str(database))
    try:
        tenant = await store.tenant_for_key(hash_key(key))
    finally:
        await store.close()
    return tenant.id if tenant else None


def test_keys_create_prints_a_key_that_authenticates(tmp_path: Path) -> None:
    database = tmp_path / "bridge.db"
    done = run_cli(tmp_path, "keys", "create", "--tenant", "acme",
                   BRIDGE_DATABASE=str(database), BRIDGE_MEDIA_DIR=str(tmp_path / "media"))
    assert done.returncode == 0, done.stderr
    [line] = done.stdout.splitlines()
    printed = json.loads(line)
    assert set(printed) == {"tenant", "key"}
    assert printed["tenant"] == "acme"
    assert printed["key"].startswith("brk_")
    assert asyncio.run(_tenant_for(database, printed["key"])) == "acme"


def test_keys_create_refuses_a_bad_tenant_name(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "keys", "create", "--tenant", "no spaces please",
                   BRIDGE_DATABASE=str(tmp_path / "bridge.db"))
    assert done.returncode == 2
    assert done.stdout == ""
    assert "--tenant" in done.stderr
