"""A TCP relay that gives each session through it a distinct client address (real PostgreSQL
connections forwarded, no network namespaces)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import threading


class AddressRelay:
    """A TCP relay on 127.0.0.1 whose outgoing connections to the server come from a different
    loopback address each (127.1.0.1, 127.1.0.2, ...): all of 127/8 is local on Linux, so the
    server sees that many client hosts without network namespaces. Allow them in pg_hba with
    ``host all all 127.0.0.0/8 trust``."""

    def __init__(self, server_port: int, first: str = "127.1.0.1") -> None:
        self.server_port = server_port
        self._next = int(ipaddress.IPv4Address(first))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="address-relay")
        self._server: asyncio.base_events.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self.port = 0
        self.sources_used = 0

    def start(self) -> AddressRelay:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._accept, "127.0.0.1", 0, backlog=1024),
            self._loop).result(10)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def _source(self) -> str:
        while True:
            addr = ipaddress.IPv4Address(self._next)
            self._next += 1
            if str(addr).split(".")[-1] not in ("0", "255"):
                self.sources_used += 1
                return str(addr)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(
                "127.0.0.1", self.server_port, local_addr=(self._source(), 0))
        except OSError:
            writer.close()
            return
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.ensure_future(self._pipe(src, dst))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                dst.close()

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._pipes):
                task.cancel()
            await asyncio.gather(*self._pipes, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> AddressRelay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
