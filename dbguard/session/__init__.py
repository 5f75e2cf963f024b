"""Per-connection protocol state machines (sans-IO): startup, auth, query cycle."""
