"""Open many idle SSE streams against a running server and report its cost per stream.

    .venv/bin/python bench/idle_streams.py --port 8000 --pid <daphne pid> --streams 2000

Reads the server's RSS and thread count from /proc before and after (same machine).
"""

import argparse
import asyncio
import resource
import time
from pathlib import Path


def proc_status(pid: int) -> dict[str, int]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "Threads"):
            values[key] = int(rest.split()[0])
    return values


async def open_stream(port: int, path: str):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    await writer.drain()
    buffer = b""
    while b"stream-open" not in buffer:
        chunk = await reader.read(4096)
        if not chunk:
            raise ConnectionError("closed")
        buffer += chunk
    return reader, writer


async def main(args):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.streams + 1000), hard))
    before = proc_status(args.pid)
    started = time.monotonic()
    semaphore = asyncio.Semaphore(200)

    async def one(n):
        async with semaphore:
            code = f"ST{(n % args.stations) + 1:03d}"
            return await open_stream(args.port, f"/api/sse/stations/{code}/")

    results = await asyncio.gather(*(one(n) for n in range(args.streams)), return_exceptions=True)
    opened = [r for r in results if not isinstance(r, BaseException)]
    elapsed = time.monotonic() - started
    await asyncio.sleep(2)
    after = proc_status(args.pid)
    per_stream = (after["VmRSS"] - before["VmRSS"]) / max(1, len(opened))
    print(
        f"streams opened {len(opened)}/{args.streams} in {elapsed:.1f}s; "
        f"server RSS {before['VmRSS'] / 1024:.1f} -> {after['VmRSS'] / 1024:.1f} MiB "
        f"({per_stream:.1f} KiB per stream); threads {before['Threads']} -> {after['Threads']}"
    )
    for _, writer in opened:
        writer.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--stations", type=int, default=5)
    asyncio.run(main(parser.parse_args()))
