"""Vercel's Python runtime serves the ASGI ``app`` of this file."""

from bridge.app import create_app
from bridge.settings import Settings

app = create_app(Settings.from_env())
