#!/usr/bin/env python3
"""Self-check of the interop peers, run by selftest.sh inside .venv-peers.

Spawns each peer the way a Rust test will (stdin piped, read "LISTENING <port>"
from stdout) and talks to it with the websockets sync client.

    selftest.py --cert CERT.pem --key KEY.pem -- NAME=CMD... [NAME=CMD...]
"""
import json
import os
import shlex
import signal
import ssl
import subprocess
import sys
import time

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

MIB = 1024 * 1024
failures = []


def check(cond, what):
    print("    %s %s" % ("ok  " if cond else "FAIL", what), flush=True)
    if not cond:
        failures.append(what)


def spawn(cmd, tls):
    argv = cmd + ["--port", "0"] + (["--tls-cert", tls[0], "--tls-key", tls[1]] if tls else [])
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    line = p.stdout.readline().decode()
    if not line.startswith("LISTENING "):
        p.kill()
        raise SystemExit("peer %s printed %r instead of LISTENING <port>" % (argv, line))
    return p, int(line.split()[1]), line


def session(url, ssl_ctx, **kw):
    return connect(url, ssl=ssl_ctx, max_size=20 * MIB, open_timeout=10, close_timeout=5, **kw)


def exercise(name, cmd, tls, cafile):
    scheme = "wss" if tls else "ws"
    print("  %s (%s)" % (name, scheme), flush=True)
    t0 = time.monotonic()
    p, port, line = spawn(cmd, tls)
    check(line == "LISTENING %d\n" % port and port > 0, "prints exactly 'LISTENING %d'" % port)
    ctx = None
    if tls:
        ctx = ssl.create_default_context(cafile=cafile)
    url = "%s://127.0.0.1:%d/some/path?x=1" % (scheme, port)
    try:
        with session(url, ctx, additional_headers={"X-Zenws-Test": "hello", "Authorization": "Bearer t0k"}) as ws:
            ext = ws.response.headers.get("Sec-WebSocket-Extensions")
            check(ext is None, "no permessage-deflate (Sec-WebSocket-Extensions: %r)" % ext)
            for msg in ["hello", "", "héllo wörld ✓ 𝄞", "__not_a_command", "__close:abc"]:
                ws.send(msg)
                r = ws.recv(timeout=10)
                check(r == msg and isinstance(r, str), "text echo %r" % msg[:20])
            for msg in [b"\x00", b"", bytes(range(256))]:
                ws.send(msg)
                r = ws.recv(timeout=10)
                check(r == msg and isinstance(r, bytes), "binary echo %d byte(s)" % len(msg))
            big = os.urandom(16 * MIB)
            ws.send(big)
            r = ws.recv(timeout=60)
            check(r == big and isinstance(r, bytes), "binary echo 16 MiB")
            bigtext = "z" * (16 * MIB - 1) + "é"
            ws.send(bigtext)
            r = ws.recv(timeout=60)
            check(r == bigtext and isinstance(r, str), "text echo 16 MiB")
            ws.send("__ping:abc")
            r = ws.recv(timeout=15)
            check(r == "pinged", "__ping:abc -> 'pinged' (got %r)" % r[:40])
            ws.send("__headers")
            h = json.loads(ws.recv(timeout=10))
            check(h.get("x-zenws-test") == "hello", "__headers has x-zenws-test: hello")
            check(h.get("authorization") == "Bearer t0k", "__headers has authorization")
            check(all(k == k.lower() for k in h), "__headers names lowercased")
            check(h.get("upgrade", "").lower() == "websocket", "__headers has upgrade: websocket")
            ws.send("after")
            check(ws.recv(timeout=10) == "after", "in-order echo after commands")
        with session(url, ctx) as ws:
            ws.send("__close:4001")
            try:
                r = ws.recv(timeout=10)
                check(False, "__close:4001 closes (got message %r)" % r[:40])
            except ConnectionClosed as e:
                code = e.rcvd.code if e.rcvd else None
                reason = e.rcvd.reason if e.rcvd else None
                check(code == 4001 and reason == "requested",
                      "__close:4001 -> close 4001 'requested' (got %r %r)" % (code, reason))
        if tls:  # DNS SAN as well as IP SAN
            with session("wss://localhost:%d" % port, ctx) as ws:
                ws.send("dns-name")
                check(ws.recv(timeout=10) == "dns-name", "wss://localhost verifies (DNS SAN)")
        # exit on stdin EOF, with a client still connected (it gets 1001)
        ws = session(url, ctx)
        p.stdin.close()
        try:
            rc = p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill(); rc = "timeout"
        check(rc == 0, "exits 0 on stdin EOF (rc=%r)" % rc)
        try:
            r = ws.recv(timeout=5)
            check(False, "open client closed on exit (got message %r)" % r[:40])
        except ConnectionClosed as e:
            code = e.rcvd.code if e.rcvd else None
            check(code == 1001, "open client closed with 1001 on exit (got %r)" % code)
        except TimeoutError:
            check(False, "open client closed on exit (still open after 5 s)")
        ws.close()
        rest = p.stdout.read()
        check(rest == b"", "nothing else on stdout (%r)" % rest[:60])
        # exit on SIGTERM
        p2, _, _ = spawn(cmd, tls)
        p2.send_signal(signal.SIGTERM)
        try:
            rc = p2.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p2.kill(); rc = "timeout"
        check(rc == 0, "exits 0 on SIGTERM (rc=%r)" % rc)
    finally:
        if p.poll() is None:
            p.kill(); p.wait()
    print("    (%.1f s)" % (time.monotonic() - t0), flush=True)


def main():
    args = sys.argv[1:]
    cert = args[args.index("--cert") + 1]
    key = args[args.index("--key") + 1]
    peers = [a.split("=", 1) for a in args[args.index("--") + 1:]]
    for name, cmd in peers:
        for tls in (None, (cert, key)):
            exercise(name, shlex.split(cmd), tls, cert)
    if failures:
        print("selftest: %d FAILED: %s" % (len(failures), "; ".join(failures)))
        sys.exit(1)
    print("selftest: all peers OK")


if __name__ == "__main__":
    main()
