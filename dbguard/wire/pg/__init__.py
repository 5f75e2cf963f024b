"""PostgreSQL frontend/backend protocol 3.0: framing, messages, authentication exchanges."""
