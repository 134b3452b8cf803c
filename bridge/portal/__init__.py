"""The portal: a tenant's web console, served by the bridge itself (SPEC section 9).

Server-rendered pages (Jinja2), plain CSS and one small script, all served from here: jobs,
endpoints, deliveries and the event catalog, doing what the API does through the same
actions (``bridge.actions``). Access is by single-use magic link (``sessions``).
"""
