#!/usr/bin/env python3
"""Echo WebSocket peer (Python `websockets`) for zenws interop tests.

Usage:
    ws_peer.py --port 0 [--tls-cert CERT.pem --tls-key KEY.pem]

Contract (identical for tests/peers/node/ws_peer.js):
  * binds 127.0.0.1:<port> (0 = ephemeral), prints exactly one line
    "LISTENING <port>" to stdout and flushes; nothing else goes to stdout
    (diagnostics go to stderr);
  * exits (status 0) when stdin reaches EOF or on SIGTERM/SIGINT, closing open
    connections with 1001 -- spawn it with a piped stdin and drop that pipe;
  * echoes text as text and binary as binary, verbatim, up to 20 MiB;
  * text "__close:CODE"   -> closes with CODE, reason "requested";
  * text "__ping:PAYLOAD" -> sends a ping with PAYLOAD (UTF-8), waits for the
    pong (10 s) and then sends text "pinged" (or "pong-timeout");
  * text "__headers"      -> sends a JSON object of the request headers
    (lowercased names; repeated headers joined with ", ");
  * no permessage-deflate, no server keepalive pings.
Messages on one connection are handled strictly in order.
"""
import argparse
import asyncio
import json
import logging
import os
import signal
import ssl
import sys
import threading

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

MAX_SIZE = 20 * 1024 * 1024
PONG_TIMEOUT = 10.0

log = logging.getLogger("ws_peer")


def request_headers(ws):
    out = {}
    for name, value in ws.request.headers.raw_items():
        key = name.lower()
        out[key] = out[key] + ", " + value if key in out else value
    return out


def valid_close_code(code):
    return code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011,
                    1012, 1013, 1014) or 3000 <= code <= 4999


async def handler(ws):
    try:
        async for msg in ws:
            if isinstance(msg, str) and msg.startswith("__"):
                if msg.startswith("__close:"):
                    try:
                        code = int(msg[len("__close:"):])
                    except ValueError:
                        code = None
                    if code is not None and valid_close_code(code):
                        await ws.close(code, "requested")
                        return
                elif msg.startswith("__ping:"):
                    waiter = await ws.ping(msg[len("__ping:"):].encode("utf-8"))
                    try:
                        await asyncio.wait_for(waiter, PONG_TIMEOUT)
                        await ws.send("pinged")
                    except asyncio.TimeoutError:
                        await ws.send("pong-timeout")
                    continue
                elif msg == "__headers":
                    await ws.send(json.dumps(request_headers(ws)))
                    continue
            await ws.send(msg)  # str -> text frame, bytes -> binary frame
    except ConnectionClosed:
        pass


def watch_stdin(loop, stop):
    """Resolve `stop` when stdin reaches EOF (the parent died or closed it)."""
    def run():
        try:
            fd = sys.stdin.fileno()
            while os.read(fd, 65536):
                pass
        except (OSError, ValueError):
            pass
        loop.call_soon_threadsafe(lambda: stop.done() or stop.set_result("stdin closed"))
    threading.Thread(target=run, name="stdin-watch", daemon=True).start()


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    args = ap.parse_args()
    if bool(args.tls_cert) != bool(args.tls_key):
        ap.error("--tls-cert and --tls-key go together")

    ssl_ctx = None
    if args.tls_cert:
        ssl_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ssl_ctx.load_cert_chain(args.tls_cert, args.tls_key)

    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda s=sig: stop.done() or stop.set_result(s.name))
    watch_stdin(loop, stop)

    server = await serve(
        handler, "127.0.0.1", args.port, ssl=ssl_ctx,
        max_size=MAX_SIZE, compression=None,
        ping_interval=None, ping_timeout=None, close_timeout=5,
    )
    port = server.sockets[0].getsockname()[1]
    sys.stdout.write("LISTENING %d\n" % port)
    sys.stdout.flush()

    why = await stop
    log.info("stopping: %s", why)
    server.close()  # closes open connections with 1001
    try:
        await asyncio.wait_for(server.wait_closed(), 3)
    except asyncio.TimeoutError:
        pass


if __name__ == "__main__":
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="ws_peer.py: %(levelname)s %(message)s")
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    sys.exit(0)
