"""HTTP handlers only: parse, authorize, call the core, shape the answer."""

from starlette.routing import BaseRoute

from bridge.api import account, callbacks, endpoints, events, health, jobs, keys, portal, tick

# Callbacks first: the busiest route (a burst of finished jobs) is matched at the first try.
routes: list[BaseRoute] = [
    *callbacks.routes,
    *jobs.routes,
    *events.routes,
    *endpoints.routes,
    *account.routes,
    *keys.routes,
    *portal.routes,
    *health.routes,
    *tick.routes,
]
