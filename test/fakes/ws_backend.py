#!/usr/bin/env python3
"""A WebSocket backend for the tunnel tests (Debian's python3-websockets): greets each client
with "hello <path>", then echoes every text and binary message back as it came. Listens on
127.0.0.1 (port 0 unless --port) and prints "listening 127.0.0.1:PORT" once it accepts."""

import argparse
import asyncio
import sys

import websockets


async def echo(ws, path):
    await ws.send(f"hello {path}")
    async for message in ws:
        await ws.send(message)


async def main(port):
    # max_size None: the bulk test sends 1 MiB messages; the pace is TCP's.
    async with websockets.serve(echo, "127.0.0.1", port, max_size=None, compression=None) as srv:
        bound = srv.sockets[0].getsockname()[1]
        print(f"listening 127.0.0.1:{bound}", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    try:
        asyncio.run(main(parser.parse_args().port))
    except KeyboardInterrupt:
        sys.exit(0)
