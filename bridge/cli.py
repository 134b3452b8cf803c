"""The ``bridge`` command: serve, demo, simulators, keys (create, list, revoke), portal-link,
tick."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

from bridge import __version__
from bridge.logs import configure as configure_logs
from bridge.settings import Settings, SettingsError, is_postgres, parse_duration, redacted

if TYPE_CHECKING:
    from bridge.timings import Timings

log = logging.getLogger("bridge")

DESCRIPTION = """\
bridge: one job API over many AI video providers; every state change a signed webhook.
Configuration comes from BRIDGE_* environment variables (see the README); the database is
BRIDGE_DATABASE (default ./bridge.db in the current directory)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bridge", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"bridge {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=summary, description=summary)

    serve = command("serve", "run the bridge's HTTP service (one process per SQLite file)")
    serve.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"),
                       help="address to listen on (default: $HOST, else 127.0.0.1)")
    serve.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")),
                       help="port to listen on, 1 to 65535 (default: $PORT, else 8000)")

    demo = command("demo", "run the whole flow on this machine against built-in provider "
                           "simulators, with a fresh database that goes when it ends")
    demo.add_argument("--timeout", type=float, default=180.0,
                      help="seconds to wait for every job to finish (default: 180)")
    demo.add_argument("--stay", default=None,
                      help="then keep serving this long, printing the bridge's URL, API key "
                           "and a portal link, e.g. 10m (default: 10m at a terminal, else 0)")

    simulators = command("simulators", "serve the four provider simulators on loopback ports "
                                       "until Ctrl-C, printing the variables that point a "
                                       "bridge at them")
    simulators.add_argument("--host", default="127.0.0.1",
                            help="address to listen on (default: 127.0.0.1)")
    simulators.add_argument("--port", type=int, default=8101,
                            help="port of the first simulator (airforce); infrai, apixo and "
                                 "venice take the next three; 0 picks free ports (default: 8101)")
    simulators.add_argument("--job-seconds", default="6-12",
                            help="how long a simulated job takes, as MIN-MAX seconds "
                                 "(default: 6-12)")

    keys = command("keys", "manage API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = key_commands.add_parser("create", help="create an API key and print it once",
                                     description="create an API key and print it once")
    create.add_argument("--tenant", required=True,
                        help="the tenant the key belongs to (made if new)")
    listing = key_commands.add_parser(
        "list", help="print the active keys, one JSON line each (prefix, never the key)",
        description="print the active keys, one JSON line each (prefix, never the key)")
    listing.add_argument("--tenant", help="only this tenant's keys (default: every tenant's)")
    revoke = key_commands.add_parser("revoke", help="revoke a key at once, in every process",
                                     description="revoke a key at once, in every process")
    revoke.add_argument("prefix", help="the key's prefix, as keys list shows it")

    portal_link = command("portal-link", "print a single-use sign-in link to a tenant's portal")
    portal_link.add_argument("--tenant", required=True, help="the tenant to sign in as")
    portal_link.add_argument("--ttl", default="15m",
                             help="how long the link may be used: 1m to 24h (default: 15m)")

    command("tick", "do one bounded round of due submissions, polls and deliveries, then exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    level = os.environ.get("BRIDGE_LOG_LEVEL", "INFO").strip().upper() or "INFO"
    if level not in logging.getLevelNamesMapping():
        return _fail(f"configuration error: BRIDGE_LOG_LEVEL: expected one of DEBUG, INFO, "
                     f"WARNING, ERROR, got {level!r}")
    if args.command in ("demo", "simulators"):
        logging.basicConfig(level=level, format="%(message)s")
    else:
        configure_logs(level)  # JSON lines

    if args.command == "demo":
        from bridge.demo import run_demo

        try:
            stay = parse_duration(args.stay or ("10m" if sys.stdout.isatty() else "0"))
        except ValueError:
            return _fail("--stay must be a duration like 10m or 0")
        return asyncio.run(run_demo(wait_seconds=args.timeout, stay_seconds=stay))
    if args.command == "simulators":
        return _simulators(args.host, args.port, args.job_seconds)

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        return _fail(f"configuration error: {exc}")
    if args.command == "serve" and not 1 <= args.port <= 65535:
        return _fail(f"--port must be from 1 to 65535, got {args.port}")
    problem = asyncio.run(_database_problem(settings))
    if problem is not None:
        return _fail(f"configuration error: BRIDGE_DATABASE: {problem}")
    if args.command != "serve":  # serve says it in its start-up line
        print(f"bridge: database {_database_name(settings.database)}", file=sys.stderr)

    if args.command == "serve":
        return serve(settings, args.host, args.port)
    if args.command == "keys":
        tenant = getattr(args, "tenant", None)
        if tenant is not None and not _is_tenant_name(tenant):
            return _fail("--tenant must be letters, digits, '-' or '_' (at most 100)")
        if args.keys_command == "list":
            return asyncio.run(_list_keys(settings, tenant))
        if args.keys_command == "revoke":
            return asyncio.run(_revoke_key(settings, args.prefix))
        return asyncio.run(_create_key(settings, args.tenant))
    if args.command == "portal-link":
        try:
            ttl = timedelta(seconds=parse_duration(args.ttl))
        except ValueError:
            return _fail("--ttl must be a duration like 15m, 2h or 900s")
        return asyncio.run(_portal_link(settings, args.tenant, ttl))
    if args.command == "tick":
        return asyncio.run(_tick(settings))
    return 2  # pragma: no cover - argparse refuses unknown commands


def _fail(message: str, code: int = 2) -> int:
    print(f"bridge: {message}", file=sys.stderr)
    return code


def _database_name(database: str) -> str:
    """The database as a start-up line names it: a PostgreSQL URL without its password, a
    SQLite file by its absolute path (a relative one depends on the directory)."""
    if is_postgres(database):
        return redacted(database)
    return f"{os.path.abspath(database)} (SQLite)"


def _media_name(media_store: str) -> str:
    """The media store as a start-up line names it: an s3:// URL as given, a directory by
    its absolute path."""
    if media_store.startswith("s3://"):
        return media_store
    return os.path.abspath(media_store)


async def _database_problem(settings: Settings) -> str | None:
    """Why the database cannot be opened (and migrated), in one line; ``None`` if it can."""
    from bridge.store import open_store

    try:
        store = await open_store(settings.database, pool_size=1)
    except Exception as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        return f"cannot open {redacted(settings.database)}: {reason}"
    await store.close()
    return None


def _simulators(host: str, port: int, job_seconds: str) -> int:
    from bridge.simulators.serve import serve_simulators

    if not 0 <= port <= 65532:
        return _fail(f"--port must be from 0 to 65532 (four ports from it), got {port}")
    try:
        low, high = (float(part) for part in job_seconds.split("-"))
    except ValueError:
        return _fail(f"--job-seconds must be MIN-MAX seconds like 6-12, got {job_seconds!r}")
    if not 0 < low <= high:
        return _fail(f"--job-seconds must be MIN-MAX seconds like 6-12, got {job_seconds!r}")
    return asyncio.run(serve_simulators(host, port, (low, high)))


def serve(settings: Settings, host: str, port: int, timings: Timings | None = None) -> int:
    """``bridge serve``: the app under uvicorn on ``host:port`` until SIGTERM or Ctrl-C
    (``timings``: see ``create_app``)."""
    import uvicorn

    from bridge.app import create_app
    from bridge.connections import (
        BACKLOG,
        default_max_connections,
        open_file_limit,
        protocol_class,
    )
    from bridge.logs import RepeatFilter
    from bridge.serving import bind, hold_sqlite_file

    if not is_postgres(settings.database):
        lock = hold_sqlite_file(settings.database)
        if lock is None:
            return _fail(f"another bridge serve is using {os.path.abspath(settings.database)}; "
                         "a SQLite database takes one serving process (PostgreSQL takes many)")
    try:
        sock = bind(host, port)
    except OSError as exc:
        return _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    files_before, files = open_file_limit()
    sized = default_max_connections(files, settings.database_pool)
    max_connections = settings.max_connections or sized
    log.info("bridge serving", extra={
        "listen": f"http://{host}:{port}",
        "database": _database_name(settings.database),
        "providers": [p.name for p in settings.enabled_providers],
        "public_url": settings.public_url,
        "media_store": _media_name(settings.media_store),
        "background": settings.background,
        "open_files": files if files == files_before else f"{files} (raised from {files_before})",
        "max_connections": max_connections,
        "request_timeout_s": settings.request_timeout,
    })
    if max_connections > sized:
        log.warning("BRIDGE_MAX_CONNECTIONS=%d is more than the %d that %d open files leave "
                    "room for: accepts may fail for want of them", max_connections, sized, files)
    # A flood of failed accepts logs one line each (asyncio); keep one a second of each.
    repeats = RepeatFilter()
    for name in ("asyncio", "uvicorn.error"):
        logging.getLogger(name).addFilter(repeats)
    # uvicorn logs through the JSON handler set up in main(); requests are logged by
    # bridge.logs.RequestLog (by route, not by path: paths can carry tokens).
    # On SIGTERM uvicorn stops accepting, then the app's lifespan lets the work in flight
    # finish within BRIDGE_SHUTDOWN_GRACE (bridge.core.Bridge.close).
    # limit_concurrency counts open connections, the asking one included, and requests in
    # flight: one more than the cap lets max_connections be served at once.
    config = uvicorn.Config(create_app(settings, timings=timings), log_config=None,
                            access_log=False, proxy_headers=bool(settings.trusted_proxies),
                            forwarded_allow_ips=list(settings.trusted_proxies) or None,
                            http=protocol_class(settings.request_timeout, max_connections),
                            limit_concurrency=max_connections + 1, timeout_keep_alive=5,
                            backlog=BACKLOG,
                            timeout_graceful_shutdown=max(1, round(settings.shutdown_grace)))
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def _is_tenant_name(tenant: str) -> bool:
    return 0 < len(tenant) <= 100 and tenant.replace("-", "").replace("_", "").isalnum()


async def _create_key(settings: Settings, tenant: str) -> int:
    from bridge.core import Bridge

    bridge = await Bridge.open(settings)
    try:
        key = await bridge.create_api_key(tenant)
    finally:
        await bridge.close()
    print(json.dumps({"tenant": tenant, "key": key}))
    return 0


async def _list_keys(settings: Settings, tenant: str | None) -> int:
    from bridge.core import Bridge

    bridge = await Bridge.open(settings)
    try:
        keys = await bridge.store.list_api_keys(tenant)
    finally:
        await bridge.close()
    for key in keys:
        print(json.dumps(key.to_json()))
    return 0


async def _revoke_key(settings: Settings, prefix: str) -> int:
    from bridge.core import Bridge
    from bridge.models import utcnow

    bridge = await Bridge.open(settings)
    try:
        revoked = await bridge.store.revoke_api_key(prefix, None, utcnow())
    finally:
        await bridge.close()
    if revoked is None:
        return _fail(f"no active key has the prefix {prefix!r} (see bridge keys list)", 1)
    print(json.dumps(revoked.to_json()))
    return 0


async def _portal_link(settings: Settings, tenant: str, ttl: timedelta) -> int:
    from bridge.core import Bridge
    from bridge.errors import InvalidRequest, RateLimited
    from bridge.portal.sessions import issue_link

    bridge = await Bridge.open(settings)
    try:
        link = await issue_link(bridge, tenant, ttl)
    except InvalidRequest:
        return _fail("--ttl must be from 1m to 24h")
    except RateLimited as exc:
        return _fail(exc.message, 1)
    finally:
        await bridge.close()
    if link is None:
        return _fail(f"no tenant {tenant!r} (tenants come with their keys: bridge keys "
                     "create --tenant NAME)", 1)
    print(link[0])
    return 0


async def _tick(settings: Settings) -> int:
    from bridge.core import Bridge

    bridge = await Bridge.open(settings)  # no background workers: this process only ticks
    try:
        counts = await bridge.tick()
    finally:
        await bridge.close()
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
