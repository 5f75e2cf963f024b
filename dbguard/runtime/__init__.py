"""The only asyncio code: listeners, upstream connections, TLS, signals."""
