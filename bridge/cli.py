"""The ``bridge`` command: serve, demo, keys (create, list, revoke), portal-link, tick."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from datetime import timedelta

from bridge.logs import configure as configure_logs
from bridge.settings import Settings, SettingsError, parse_duration


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bridge", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the bridge's HTTP service")
    serve.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))

    demo = commands.add_parser(
        "demo", help="run the whole flow on this machine against built-in provider simulators"
    )
    demo.add_argument("--timeout", type=float, default=180.0,
                      help="seconds to wait for every job to finish (default 180)")
    demo.add_argument("--stay", default=None,
                      help="then keep serving this long with a link to the portal, e.g. 10m "
                           "(default 10m at a terminal, 0 otherwise)")

    keys = commands.add_parser("keys", help="manage API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="create an API key and print it once")
    create.add_argument("--tenant", required=True)
    listing = key_commands.add_parser(
        "list", help="print the active keys, one JSON line each (prefix, never the key)")
    listing.add_argument("--tenant", help="only this tenant's keys")
    revoke = key_commands.add_parser("revoke", help="revoke a key at once, in every process")
    revoke.add_argument("prefix", help="the key's prefix, as keys list shows it")

    portal_link = commands.add_parser(
        "portal-link", help="print a single-use sign-in link to the portal for a tenant")
    portal_link.add_argument("--tenant", required=True)
    portal_link.add_argument("--ttl", default="15m",
                             help="how long the link may be used: 1m to 24h (default 15m)")

    commands.add_parser(
        "tick", help="do one bounded round of due submissions, polls and deliveries, then exit"
    )

    args = parser.parse_args(argv)
    level = os.environ.get("BRIDGE_LOG_LEVEL", "INFO").strip().upper() or "INFO"
    if level not in logging.getLevelNamesMapping():
        print(f"bridge: configuration error: BRIDGE_LOG_LEVEL: expected one of DEBUG, INFO, "
              f"WARNING, ERROR, got {level!r}", file=sys.stderr)
        return 2
    if args.command == "demo":
        logging.basicConfig(level=level, format="%(message)s")
    else:
        configure_logs(level)  # JSON lines

    if args.command == "demo":
        from bridge.demo import run_demo

        try:
            stay = parse_duration(args.stay or ("10m" if sys.stdout.isatty() else "0"))
        except ValueError:
            print("bridge: --stay must be a duration like 10m or 0", file=sys.stderr)
            return 2
        return asyncio.run(run_demo(wait_seconds=args.timeout, stay_seconds=stay))

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"bridge: configuration error: {exc}", file=sys.stderr)
        return 2
    problem = asyncio.run(_database_problem(settings))
    if problem is not None:
        print(f"bridge: configuration error: BRIDGE_DATABASE: {problem}", file=sys.stderr)
        return 2

    if args.command == "serve":
        return _serve(settings, args.host, args.port)
    if args.command == "keys":
        tenant = getattr(args, "tenant", None)
        if tenant is not None and not _is_tenant_name(tenant):
            print("bridge: --tenant must be letters, digits, '-' or '_' (at most 100)",
                  file=sys.stderr)
            return 2
        if args.keys_command == "list":
            return asyncio.run(_list_keys(settings, tenant))
        if args.keys_command == "revoke":
            return asyncio.run(_revoke_key(settings, args.prefix))
        return asyncio.run(_create_key(settings, args.tenant))
    if args.command == "portal-link":
        try:
            ttl = timedelta(seconds=parse_duration(args.ttl))
        except ValueError:
            print("bridge: --ttl must be a duration like 15m, 2h or 900s", file=sys.stderr)
            return 2
        return asyncio.run(_portal_link(settings, args.tenant, ttl))
    if args.command == "tick":
        return asyncio.run(_tick(settings))
    return 2  # pragma: no cover - argparse refuses unknown commands


async def _database_problem(settings: Settings) -> str | None:
    """Why the database cannot be opened (and migrated), in one line; ``None`` if it can."""
    from bridge.settings import redacted
    from bridge.store import open_store

    try:
        store = await open_store(settings.database, pool_size=1)
    except Exception as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        return f"cannot open {redacted(settings.database)}: {reason}"
    await store.close()
    return None


def _serve(settings: Settings, host: str, port: int) -> int:
    import uvicorn

    from bridge.app import create_app

    # uvicorn logs through the JSON handler set up in main(); requests are logged by
    # bridge.logs.RequestLog (by route, not by path: paths can carry tokens).
    # On SIGTERM uvicorn stops accepting, then the app's lifespan lets the work in flight
    # finish within BRIDGE_SHUTDOWN_GRACE (bridge.core.Bridge.close).
    uvicorn.run(create_app(settings), host=host, port=port, log_config=None,
                access_log=False, proxy_headers=True, forwarded_allow_ips="*",
                timeout_graceful_shutdown=max(1, round(settings.shutdown_grace)))
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
        print(f"bridge: no active key has the prefix {prefix!r} (see bridge keys list)",
              file=sys.stderr)
        return 1
    print(json.dumps(revoked.to_json()))
    return 0


async def _portal_link(settings: Settings, tenant: str, ttl: timedelta) -> int:
    from bridge.core import Bridge
    from bridge.errors import InvalidRequest
    from bridge.portal.sessions import issue_link

    bridge = await Bridge.open(settings)
    try:
        link = await issue_link(bridge, tenant, ttl)
    except InvalidRequest:
        print("bridge: --ttl must be from 1m to 24h", file=sys.stderr)
        return 2
    finally:
        await bridge.close()
    if link is None:
        print(f"bridge: no tenant {tenant!r} (tenants come with their keys: bridge keys "
              "create --tenant NAME)", file=sys.stderr)
        return 1
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
