#!/usr/bin/env python3
"""N concurrent POSTs for bench/run.sh and bench/storm.sh.

Opens N connections to 127.0.0.1:PORT first, then, once every one of them is
connected, writes one `POST PATH` on each (all within a few milliseconds),
with a body of BODY_BYTES (default 0) and its Content-Length, and reads
every status line. Prints one JSON object: how many got each status, how
long the burst took, and how many connections failed.

usage: posts.py PORT N PATH [BODY_BYTES]
"""

import asyncio
import json
import sys
import time


async def one(port, path, body, go, connected, results):
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as e:
        results.append(("connect-error", str(e)))
        connected.release()
        return
    connected.release()
    await go.wait()
    writer.write(
        (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
    )
    writer.write(body)
    try:
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 120)
        parts = status_line.decode(errors="replace").split(" ")
        results.append((parts[1] if len(parts) > 1 else "no-status", None))
        await reader.read()  # drain to EOF (Connection: close)
    except (OSError, asyncio.TimeoutError) as e:
        results.append(("io-error", str(e)))
    finally:
        writer.close()


async def main():
    port, n, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    body = bytes(int(sys.argv[4])) if len(sys.argv) > 4 else b""
    go = asyncio.Event()
    connected = asyncio.Semaphore(0)
    results = []
    tasks = [
        asyncio.create_task(one(port, path, body, go, connected, results))
        for _ in range(n)
    ]
    for _ in range(n):
        await connected.acquire()
    started = time.monotonic()
    go.set()
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - started
    counts = {}
    errors = []
    for status, err in results:
        counts[status] = counts.get(status, 0) + 1
        if err and len(errors) < 5:
            errors.append(err)
    print(json.dumps({"n": n, "statuses": counts, "seconds": round(elapsed, 3), "errors": errors}))


if __name__ == "__main__":
    asyncio.run(main())
