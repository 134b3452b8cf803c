"""HTTP handlers only: parse, authorize, call the core, shape the answer."""

from starlette.routing import BaseRoute

from bridge.api import account, callbacks, endpoints, events, health, jobs, keys, portal, tick

routes: list[BaseRoute] = [
    *jobs.routes,
    *events.routes,
    *endpoints.routes,
    *account.routes,
    *keys.routes,
    *portal.routes,
    *callbacks.routes,
    *health.routes,
    *tick.routes,
]
