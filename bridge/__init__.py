"""bridge: one job API over many AI video providers; every state change a signed webhook."""

__version__ = "0.1.0"
