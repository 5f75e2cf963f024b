# bench.byte_pipe — a bare asyncio byte pipe (uvloop, Protocols), for benchmarks only.
# Owns: accepting TCP connections and copying bytes both ways to one upstream connection each,
# with the same write-buffer backpressure as dbguard's listeners. It reads nothing it copies: no
# framing, no protocol, no policy. It is the floor any asyncio proxy on this machine starts from
# (two reads and two writes per round trip), so a benchmark can tell what dbguard's own code
# costs from what the kernel and the event loop cost. Never a way to run dbguard.
"""Copy bytes between clients and one upstream TCP address, nothing else.

Usage (from the repository root):
    python -m bench.byte_pipe --listen 127.0.0.1:PORT --upstream 127.0.0.1:PORT
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from typing import cast

import uvloop

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024


class _Upstream(asyncio.Protocol):
    def __init__(self, client: _Client) -> None:
        self.client = client

    def data_received(self, data: bytes) -> None:
        transport = self.client.transport
        if transport is not None:
            transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.client.transport is not None:
            self.client.transport.close()

    def pause_writing(self) -> None:
        if self.client.transport is not None:
            self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.client.transport is not None:
            self.client.transport.resume_reading()


class _Client(asyncio.Protocol):
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.transport: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self.pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)
        self.transport.pause_reading()
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            upstream, _ = await loop.create_connection(lambda: _Upstream(self), self.host, self.port)
        except OSError:
            if self.transport is not None:
                self.transport.close()
            return
        self.upstream = upstream
        self.upstream.set_write_buffer_limits(HIGH_WATER, LOW_WATER)
        if self.transport is None or self.transport.is_closing():
            self.upstream.close()
            return
        self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.upstream is not None:
            self.upstream.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.upstream is not None:
            self.upstream.close()

    def pause_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.resume_reading()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, not {text!r}")
    return host, int(port)


async def pipe(listen: tuple[str, int], upstream: tuple[str, int]) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Client(*upstream), listen[0], listen[1])
    stopped = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopped.set)
    async with server:
        await stopped.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.byte_pipe",
                                     description="a bare asyncio byte pipe (benchmark baseline only)")
    parser.add_argument("--listen", type=_address, required=True, metavar="HOST:PORT")
    parser.add_argument("--upstream", type=_address, required=True, metavar="HOST:PORT")
    args = parser.parse_args(argv)
    listen: tuple[str, int] = args.listen
    upstream: tuple[str, int] = args.upstream
    uvloop.run(pipe(listen, upstream))  # the event loop dbguard serve runs on
    return 0


if __name__ == "__main__":
    sys.exit(main())
