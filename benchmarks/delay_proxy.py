"""A TCP proxy on loopback that adds a fixed latency, as a real link to S3 has.

Every chunk is forwarded ``round_trip / 2`` seconds after it arrived, in each direction, so a
request and its answer take ``round_trip`` longer; chunks are not held back by one another, so
bandwidth and pipelining are unchanged. It runs in its own process, so relaying bytes never takes
the interpreter lock from the client being measured. (The fault-injecting proxy of the tests
works on HTTP requests instead of bytes, so the two share nothing but the idea.)

    python benchmarks/delay_proxy.py http://127.0.0.1:PORT 0.020   # prints the port it serves
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from urllib.parse import urlsplit


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def send() -> None:
        while True:
            due, data = await queue.get()
            await asyncio.sleep(max(0.0, due - loop.time()))
            if not data:
                break
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()  # half-close: the answer may still be on its way back

    sender = asyncio.create_task(send())
    with suppress(ConnectionError):
        while data := await reader.read(65536):
            queue.put_nowait((loop.time() + delay, data))
    queue.put_nowait((loop.time() + delay, b""))
    with suppress(ConnectionError, RuntimeError):
        await sender


async def serve(upstream: str, round_trip: float) -> None:
    target = urlsplit(upstream)
    connections: set[asyncio.Task] = set()  # asyncio keeps only weak references to them

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        connections.add(task)
        task.add_done_callback(connections.discard)
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

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


@contextmanager
def delay_proxy(upstream: str, round_trip: float = 0.020) -> Iterator[str]:
    """Run the proxy in a child process; yields its URL (an S3 ``endpoint_url``)."""
    proc = subprocess.Popen(
        [sys.executable, __file__, upstream, str(round_trip)], stdout=subprocess.PIPE, text=True
    )
    try:
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    with suppress(KeyboardInterrupt):
        asyncio.run(serve(sys.argv[1], float(sys.argv[2])))
