"""Configuration, read once from the environment (SPEC section 2).

``Settings.from_env()`` raises :class:`SettingsError` naming the variable for any invalid
value; ``bridge serve`` prints that one line and exits with status 2. Secrets are wrapped in
:class:`Secret` so that a settings object can be printed or logged without leaking them.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from bridge.config import ConfigError, ConfiguredEndpoint
from bridge.config import load as load_config

PROVIDERS = ("airforce", "infrai", "apixo", "venice")

DEFAULT_BASE_URLS = {
    "airforce": "https://api.airforce",
    "infrai": "https://api.infrai.cc",
    "apixo": "https://api.apixo.ai",
    "venice": "https://api.venice.ai/api/v1",
}

DEFAULT_RETRY_SCHEDULE = "5s,5m,30m,2h,5h,10h,10h"
MAX_SHUTDOWN_GRACE = 300.0  # seconds; orchestrators kill long before this anyway
MAX_REQUEST_TIMEOUT = 600.0  # seconds
MAX_CONNECTIONS = 1_000_000

DEFAULT_MEDIA_MAX_BYTES = 2 * 1024**3
_SIZE_UNITS = {"": 1, "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4,
               "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4}
_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]i?B|B)?\s*$")
# S3's rules for a bucket's name: 3 to 63 lower-case letters, digits, dots and hyphens.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


class SettingsError(Exception):
    """An invalid configuration value; the message names the variable."""


class Secret:
    """A string that does not show itself in ``repr``/``str``; ``reveal()`` gives it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class ProviderSettings:
    name: str
    api_key: Secret | None
    base_url: str

    @property
    def enabled(self) -> bool:
        return self.api_key is not None


@dataclass(frozen=True)
class Settings:
    database: str = "./bridge.db"
    database_pool: int = 10
    public_url: str = "http://127.0.0.1:8000"
    secret_key: Secret | None = None
    api_key: Secret | None = None
    tick_secret: Secret | None = None
    metrics_token: Secret | None = None
    background: bool = True
    retry_schedule: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
    allow_private_targets: bool = False
    confirm_callbacks: bool = True
    media_dir: str = "./media"
    media_store: str = "./media"  # a directory, or s3://bucket[/prefix]
    s3_endpoint_url: str | None = None
    media_max_bytes: int = DEFAULT_MEDIA_MAX_BYTES
    shutdown_grace: float = 10.0
    request_timeout: float = 30.0
    max_connections: int | None = None  # None: sized to the open-file limit at start-up
    trusted_proxies: tuple[str, ...] = ()  # whose X-Forwarded-For/-Proto are believed
    config: str | None = None
    configured_endpoints: tuple[ConfiguredEndpoint, ...] = ()
    providers: Mapping[str, ProviderSettings] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name)
            if value is None or value.strip() == "":
                return None
            return value.strip()

        providers = {}
        for name in PROVIDERS:
            upper = name.upper()
            key = get(f"BRIDGE_{upper}_API_KEY")
            base = get(f"BRIDGE_{upper}_BASE_URL") or DEFAULT_BASE_URLS[name]
            providers[name] = ProviderSettings(
                name=name,
                api_key=Secret(key) if key else None,
                base_url=_url(f"BRIDGE_{upper}_BASE_URL", base).rstrip("/"),
            )

        config = get("BRIDGE_CONFIG")
        if config is not None and not Path(config).is_file():
            raise SettingsError(f"BRIDGE_CONFIG: no such file: {config}")
        allow_private = _switch("BRIDGE_ALLOW_PRIVATE_TARGETS",
                                get("BRIDGE_ALLOW_PRIVATE_TARGETS"), default=False)
        configured: tuple[ConfiguredEndpoint, ...] = ()
        if config is not None:
            try:
                configured = tuple(load_config(config, allow_private=allow_private))
            except ConfigError as exc:
                raise SettingsError(f"BRIDGE_CONFIG: {exc}") from None

        media_dir = get("BRIDGE_MEDIA_DIR") or "./media"
        media_store = _media_store(get("BRIDGE_MEDIA_STORE") or media_dir)
        s3_endpoint = get("BRIDGE_S3_ENDPOINT_URL")
        if s3_endpoint is not None:
            if s3_location(media_store) is None:
                raise SettingsError("BRIDGE_S3_ENDPOINT_URL: set, but BRIDGE_MEDIA_STORE is "
                                    "not an s3://bucket URL")
            s3_endpoint = _url("BRIDGE_S3_ENDPOINT_URL", s3_endpoint).rstrip("/")

        return cls(
            database=_database(get("BRIDGE_DATABASE") or "./bridge.db"),
            database_pool=_count("BRIDGE_DATABASE_POOL", get("BRIDGE_DATABASE_POOL"),
                                 default=10, most=100),
            public_url=_url("BRIDGE_PUBLIC_URL", get("BRIDGE_PUBLIC_URL") or cls.public_url)
            .rstrip("/"),
            secret_key=_secret("BRIDGE_SECRET_KEY", get("BRIDGE_SECRET_KEY"), min_length=16),
            api_key=_secret("BRIDGE_API_KEY", get("BRIDGE_API_KEY"), min_length=8),
            tick_secret=_secret("BRIDGE_TICK_SECRET", get("BRIDGE_TICK_SECRET"), min_length=8),
            metrics_token=_secret("BRIDGE_METRICS_TOKEN", get("BRIDGE_METRICS_TOKEN"),
                                  min_length=8),
            background=_switch("BRIDGE_BACKGROUND", get("BRIDGE_BACKGROUND"), default=True),
            retry_schedule=parse_schedule(
                "BRIDGE_RETRY_SCHEDULE", get("BRIDGE_RETRY_SCHEDULE") or DEFAULT_RETRY_SCHEDULE
            ),
            allow_private_targets=allow_private,
            confirm_callbacks=_switch(
                "BRIDGE_CONFIRM_CALLBACKS", get("BRIDGE_CONFIRM_CALLBACKS"), default=True
            ),
            media_dir=media_dir,
            media_store=media_store,
            s3_endpoint_url=s3_endpoint,
            media_max_bytes=_bytes("BRIDGE_MEDIA_MAX_BYTES", get("BRIDGE_MEDIA_MAX_BYTES"),
                                   DEFAULT_MEDIA_MAX_BYTES),
            shutdown_grace=_seconds("BRIDGE_SHUTDOWN_GRACE", get("BRIDGE_SHUTDOWN_GRACE"),
                                    cls.shutdown_grace, most=MAX_SHUTDOWN_GRACE,
                                    example="10s", zero=True),
            request_timeout=_seconds("BRIDGE_REQUEST_TIMEOUT", get("BRIDGE_REQUEST_TIMEOUT"),
                                     cls.request_timeout, most=MAX_REQUEST_TIMEOUT,
                                     example="30s", zero=False),
            max_connections=_count("BRIDGE_MAX_CONNECTIONS", get("BRIDGE_MAX_CONNECTIONS"),
                                   default=0, most=MAX_CONNECTIONS) or None,
            trusted_proxies=_proxies(get("BRIDGE_TRUSTED_PROXIES")),
            config=config,
            configured_endpoints=configured,
            providers=providers,
        )

    @property
    def enabled_providers(self) -> list[ProviderSettings]:
        return [p for p in self.providers.values() if p.enabled]


def parse_duration(text: str) -> float:
    """``"5s"``, ``"5m"``, ``"2h"``, ``"1d"``, ``"250ms"`` or plain seconds, to seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def parse_size(text: str) -> int:
    """``"2GiB"``, ``"500MB"``, ``"64KiB"`` or plain bytes, to bytes."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r}")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2) or ""]


def s3_location(media_store: str) -> tuple[str, str] | None:
    """``(bucket, prefix)`` of an ``s3://bucket[/prefix]`` media store; ``None`` for a
    directory."""
    if not media_store.startswith("s3://"):
        return None
    bucket, _, prefix = media_store[len("s3://"):].partition("/")
    return bucket, prefix.strip("/")


def parse_schedule(variable: str, text: str) -> tuple[float, ...]:
    parts = [part for part in text.split(",") if part.strip()]
    if not parts:
        raise SettingsError(
            f"{variable}: must list at least one delay, e.g. {DEFAULT_RETRY_SCHEDULE}"
        )
    try:
        delays = tuple(parse_duration(part) for part in parts)
    except ValueError as exc:
        raise SettingsError(
            f"{variable}: {exc}; expected comma-separated delays like {DEFAULT_RETRY_SCHEDULE}"
        ) from None
    if any(delay <= 0 for delay in delays):
        raise SettingsError(f"{variable}: every delay must be greater than zero")
    return delays


def is_postgres(database: str) -> bool:
    """Whether ``BRIDGE_DATABASE`` names a PostgreSQL server (else it is a SQLite file)."""
    return database.startswith(("postgresql://", "postgres://"))


def redacted(database: str) -> str:
    """``BRIDGE_DATABASE`` without a password, for messages."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", database)


def _database(value: str) -> str:
    if is_postgres(value):
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError as exc:
            raise SettingsError(f"BRIDGE_DATABASE: not a valid PostgreSQL URL ({exc})") from None
        if parts.query and not all("=" in pair for pair in parts.query.split("&")):
            raise SettingsError("BRIDGE_DATABASE: not a valid PostgreSQL URL (its query)")
        return value
    if "://" in value:
        scheme = value.split("://", 1)[0]
        raise SettingsError(f"BRIDGE_DATABASE: expected a SQLite file path or a "
                            f"postgresql:// URL, got a {scheme}:// URL")
    # A mistyped path must not quietly start an empty database somewhere new.
    directory = Path(value).expanduser().parent
    if value != ":memory:" and not directory.is_dir():
        raise SettingsError(f"BRIDGE_DATABASE: the directory {str(directory)!r} does not "
                            "exist (bridge creates the file, not its directory)")
    return value


def _media_store(value: str) -> str:
    location = s3_location(value)
    if location is None:
        if "://" in value:
            raise SettingsError(f"BRIDGE_MEDIA_STORE: expected a directory path or "
                                f"s3://bucket[/prefix], got a {value.split('://', 1)[0]}:// URL")
        return value
    bucket, prefix = location
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise SettingsError(f"BRIDGE_MEDIA_STORE: {bucket!r} is not a valid bucket name "
                            "(3 to 63 lower-case letters, digits, dots and hyphens)")
    if "?" in prefix or "#" in prefix or "//" in prefix:
        raise SettingsError("BRIDGE_MEDIA_STORE: the prefix after the bucket must be a plain "
                            "path, e.g. s3://my-bucket/videos")
    if importlib.util.find_spec("aiobotocore") is None:
        raise SettingsError("BRIDGE_MEDIA_STORE: an s3:// store needs aiobotocore: "
                            "pip install 'bridge[s3]'")
    return f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"


def _bytes(variable: str, value: str | None, default: int) -> int:
    if value is None:
        return default
    try:
        size = parse_size(value)
    except ValueError as exc:
        raise SettingsError(f"{variable}: {exc}; expected e.g. 2GiB or 500MB") from None
    if size <= 0:
        raise SettingsError(f"{variable}: must be more than 0, got {value!r}")
    return size


def _count(variable: str, value: str | None, *, default: int, most: int) -> int:
    if value is None:
        return default
    if not value.isdigit() or not 1 <= int(value) <= most:
        raise SettingsError(f"{variable}: expected a whole number from 1 to {most}, "
                            f"got {value!r}")
    return int(value)


def _seconds(variable: str, value: str | None, default: float, *, most: float,
             example: str, zero: bool) -> float:
    """A duration variable: ``default`` when unset, refused past ``most`` (or at 0 unless
    ``zero`` may be)."""
    if value is None:
        return default
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise SettingsError(f"{variable}: {exc}; expected e.g. {example}") from None
    if seconds > most:
        raise SettingsError(f"{variable}: at most {most:g}s, got {value!r}")
    if seconds <= 0 and not zero:
        raise SettingsError(f"{variable}: must be more than 0, got {value!r}")
    return seconds
def _proxies(value: str | None) -> tuple[str, ...]:
    """``BRIDGE_TRUSTED_PROXIES``: addresses and CIDR networks, comma-separated, or ``*``."""
    if value is None:
        return ()
    entries = tuple(part.strip() for part in value.split(",") if part.strip())
    if entries == ("*",):
        return entries
    if "*" in entries:
        raise SettingsError("BRIDGE_TRUSTED_PROXIES: * stands alone (it trusts every peer)")
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise SettingsError(
                f"BRIDGE_TRUSTED_PROXIES: {entry!r} is not an IP address or CIDR network; "
                "expected e.g. 10.0.0.0/8,127.0.0.1 (or * to trust every peer)") from None
    return entries


def _switch(variable: str, value: str | None, *, default: bool) -> bool:
    if value is None:
        return default
    lowered = value.lower()
    if lowered in ("1", "on", "true", "yes"):
        return True
    if lowered in ("0", "off", "false", "no"):
        return False
    raise SettingsError(f"{variable}: expected on/off (1/0), got {value!r}")


def _url(variable: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SettingsError(f"{variable}: expected an http(s) URL, got {value!r}")
    return value


def _secret(variable: str, value: str | None, *, min_length: int) -> Secret | None:
    if value is None:
        return None
    if len(value) < min_length:
        # Never echo the value: it is a secret, even when it is a bad one.
        raise SettingsError(f"{variable}: too short (at least {min_length} characters)")
    return Secret(value)
