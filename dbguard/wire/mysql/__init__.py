"""Sans-IO MySQL/MariaDB client/server protocol codec: packets, messages, authentication."""
