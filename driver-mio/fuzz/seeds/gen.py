#!/usr/bin/env python3
"""Write the seed inputs of every target into seeds/<target>/ (run from anywhere).

The layouts are described at the top of each fuzz_targets/<target>.rs.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def frame(op, payload, fin=True, ext=None):
    b0 = (0x80 if fin else 0) | op
    n = len(payload)
    if ext == 64 or (ext is None and n > 0xFFFF):
        head = bytes([b0, 127]) + struct.pack(">Q", n)
    elif ext == 16 or (ext is None and n >= 126):
        head = bytes([b0, 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, n])
    return head + payload


# frame_decoder: [limits] [n] [n split sizes] [stream]; limits 0x0F = 16 MiB both.
def decoder(name, stream, sizes=b"\x03\x07\x01", limits=0x0F):
    write("frame_decoder", name, bytes([limits, len(sizes)]) + sizes + stream)


text = "héllo €𝄞 wörld".encode()
decoder("text", frame(0x1, b"hello"))
decoder("binary_ping_pong", frame(0x2, b"\x00\xff" * 3) + frame(0x9, b"p") + frame(0xA, b""))
decoder("close", frame(0x8, struct.pack(">H", 1000) + "bye é".encode()) + frame(0x8, b""))
decoder(
    "fragmented_utf8",
    frame(0x1, text[:2], fin=False) + frame(0x9, b"x") + frame(0x0, text[2:9], fin=False)
    + frame(0x0, text[9:], fin=True),
)
decoder("fragmented_binary", frame(0x2, b"ab", fin=False) + frame(0x0, b"cd") + frame(0x2, b"e"))
decoder("len16", frame(0x2, bytes(range(200))), sizes=b"\x01\x02\x05\x40")
decoder("len64_nonminimal", frame(0x1, b"abc", ext=64) + frame(0x2, b"z", ext=16))
decoder("bad_utf8", frame(0x1, b"ok\xe2\x82", fin=False) + frame(0x0, b"\x28"))
decoder("too_large", frame(0x2, b"x" * 300), limits=0x05)
decoder("masked_reserved", bytes([0x81, 0x85, 1, 2, 3, 4]) + b"abcde" + bytes([0xC1, 0]))

# upgrade_response: [flags] [n] [n split sizes] [response]; @ACCEPT@ → the real key.
OK = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: @ACCEPT@\r\n"
)
write("upgrade_response", "ok", b"\x00\x02\x05\x11" + OK + b"\r\n")
write("upgrade_response", "ok_then_frame", b"\x00\x00" + OK + b"\r\n\x81\x02hi")
write(
    "upgrade_response",
    "subprotocol",
    b"\x01\x01\x01" + OK + b"Sec-WebSocket-Protocol: superchat\r\n\r\n",
)
write(
    "upgrade_response",
    "connection_list",
    b"\x00\x00HTTP/1.1 101 OK\r\nupgrade:  WebSocket \r\nconnection: keep-alive, upgrade\r\n"
    b"sec-websocket-accept: @ACCEPT@\r\n\r\n",
)
write(
    "upgrade_response",
    "refused",
    b"\x02\x00HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer S3CR3T\r\n"
    b"Content-Length: 0\r\n\r\n",
)
write("upgrade_response", "http10", b"\x00\x00HTTP/1.0 101 OK\r\n\r\n")

# url: the raw string.
for i, u in enumerate(
    [
        "ws://example.com",
        "wss://Example.COM:8443/ws/api/v2?token=s3cr3t&x=1",
        "wss://[::1]:9001/p",
        "ws://127.0.0.1:80/caf\u00e9?q={x}",
        "ws://user:pw@host/p?q#frag",
        "http://h/x?y",
        "garbage?secret://h",
    ]
):
    write("url", f"url{i}", u.encode())

# tls_session: [flags] [read buffer] [n] [n split sizes] then
#   raw mode (flags bit 0): ciphertext;
#   handshake mode: [m] [m x (offset u16 LE, xor)] [payload].
payload = b"\x81\x05hello" * 20 + bytes(range(256)) * 8
write("tls_session", "tls13", bytes([0x00, 3, 0]) + b"\x00" + payload)
write("tls_session", "tls13_close_split", bytes([0x08, 1, 3, 1, 7, 200]) + b"\x00" + payload)
write("tls_session", "tls12_close_eof", bytes([0x0E, 0, 2, 5, 0]) + b"\x00" + payload)
write("tls_session", "tls13_eof_small_buf", bytes([0x04, 0, 0]) + b"\x00" + payload[:100])
write("tls_session", "tls13_flip_handshake", bytes([0x00, 3, 0, 1]) + struct.pack("<H", 60) + b"\x01" + payload)
write("tls_session", "tls13_flip_record", bytes([0x08, 2, 0, 1]) + struct.pack("<H", 3000) + b"\x80" + payload)
# Raw: a ServerHello-shaped record, an alert, a ChangeCipherSpec, garbage.
server_hello = b"\x02\x00\x00\x46\x03\x03" + bytes(32) + b"\x20" + bytes(32) + b"\x13\x01\x00" + b"\x00\x00"
write("tls_session", "raw_server_hello", bytes([0x01, 3, 2, 3, 9]) + b"\x16\x03\x03" + struct.pack(">H", len(server_hello)) + server_hello)
write("tls_session", "raw_alert", bytes([0x01, 3, 0]) + b"\x15\x03\x03\x00\x02\x02\x28")
write("tls_session", "raw_ccs_then_data", bytes([0x05, 0, 1, 1]) + b"\x14\x03\x03\x00\x01\x01\x17\x03\x03\x00\x05hello")
