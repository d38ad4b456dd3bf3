"""Open-loop load at a fixed rate, for latency without saturation: call *i* is started at
``start + i / rate`` whether or not earlier calls have answered, and its latency runs from that
start, including any wait for a free connection (so a stalled target is charged for the calls
that queue behind it, rather than the client quietly sending fewer: no coordinated omission).
The client's own timer lateness is not charged to the target.

Calls go over a small pool of keep-alive connections (asyncio streams, the request bytes built
once); at 200 calls/s the client costs a few percent of one core.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from bench.latency import Histogram
from bench.mcp_request import raw_request

POOL_SIZE = 16


@dataclass
class RateResult:
    sent: int
    answered: int
    failures: int  # non-2xx answers and broken connections
    seconds: float
    latency: Histogram
    client_cpu: float = 0.0  # this client's CPU seconds


async def read_response(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 response (Content-Length or chunked body); return its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


class Connection:
    def __init__(self, port: int) -> None:
        self.port = port
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def call(self, request: bytes) -> int:
        if self.streams is None:
            self.streams = await asyncio.open_connection("127.0.0.1", self.port)
        reader, writer = self.streams
        try:
            writer.write(request)
            return await read_response(reader)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            self.close()
            raise

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


async def _run(port: int, path: str, api_key: str | None, rate: float, seconds: float) -> RateResult:
    request = raw_request(port, path, api_key)
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    pool = [Connection(port) for _ in range(POOL_SIZE)]
    # Connections are opened (one untimed call each) before the clock starts: the figures are
    # steady-state latency over keep-alive connections, as an MCP client's would be.
    await asyncio.gather(*(connection.call(request) for connection in pool))
    for connection in pool:
        idle.put_nowait(connection)
    result = RateResult(sent=0, answered=0, failures=0, seconds=seconds, latency=Histogram())

    async def one() -> None:
        started = time.perf_counter()
        connection = await idle.get()
        try:
            status = await asyncio.wait_for(connection.call(request), timeout=5)
            result.answered += 1
            result.failures += not 200 <= status < 300
            result.latency.add(round((time.perf_counter() - started) * 1e6))
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            connection.close()
            result.failures += 1
        finally:
            idle.put_nowait(connection)

    tasks = []
    start = time.perf_counter() + 0.05
    total = int(rate * seconds)
    for i in range(total):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
        result.sent += 1
    await asyncio.gather(*tasks)
    while not idle.empty():
        idle.get_nowait().close()
    return result


def run_fixed_rate(port: int, path: str, api_key: str | None, rate: float, seconds: float) -> RateResult:
    started = time.process_time()
    result = asyncio.run(_run(port, path, api_key, rate, seconds))
    result.client_cpu = time.process_time() - started
    return result
