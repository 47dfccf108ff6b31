"""A TCP proxy on loopback that adds a fixed latency, as a real link to S3 has.

Every chunk is forwarded ``one_way`` seconds after it arrived, in each direction, so a request and
its answer take ``2 * one_way`` longer; chunks are not held back by one another, so bandwidth and
pipelining are unchanged. (The fault-injecting proxy of the tests works on HTTP requests instead
of bytes, so the two share nothing but the idea.)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from urllib.parse import urlsplit


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def send() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                break
            await asyncio.sleep(max(0.0, due - loop.time()))
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()  # half-close: the answer may still be on its way back

    sender = asyncio.create_task(send())
    try:
        while data := await reader.read(65536):
            queue.put_nowait((loop.time() + delay, data))
    except ConnectionError:
        pass
    queue.put_nowait((loop.time() + delay, b""))
    with suppress(ConnectionError):
        await sender


@contextmanager
def delay_proxy(upstream: str, round_trip: float = 0.020) -> Iterator[str]:
    """Serve the proxy on a free loopback port in a background thread; yields its URL."""
    target = urlsplit(upstream)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, object] = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(target.hostname, target.port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            _pipe(reader, up_writer, round_trip / 2), _pipe(up_reader, writer, round_trip / 2)
        )
        up_writer.close()
        writer.close()

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        holder["server"] = server
        holder["port"] = server.sockets[0].getsockname()[1]
        started.set()
        async with server:
            await server.serve_forever()

    thread = threading.Thread(
        target=lambda: loop.run_until_complete(serve()), name="delay-proxy", daemon=True
    )
    thread.start()
    if not started.wait(10):
        raise RuntimeError("delay proxy did not start")
    try:
        yield f"http://127.0.0.1:{holder['port']}"
    finally:
        loop.call_soon_threadsafe(holder["server"].close)  # type: ignore[attr-defined]
        thread.join(10)
