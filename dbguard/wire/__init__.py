"""Sans-IO wire protocol codecs: bytes in, typed messages and bytes out; no sockets."""
