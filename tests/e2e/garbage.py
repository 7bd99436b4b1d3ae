#!/usr/bin/env python3
"""Sends malformed messages to an eep coordinator over a real ZMQ DEALER socket and checks that
each gets an error reply naming the problem (eep-protocol(7)). Exit 0 when all behave."""
import sys

import msgpack
import zmq

addr = sys.argv[1]
ctx = zmq.Context()
s = ctx.socket(zmq.DEALER)
s.setsockopt(zmq.LINGER, 0)
s.connect(addr)

cases = [
    ("random bytes", b"\xc1\xff\x00garbage"),
    ("not a map", msgpack.packb([1, 2, 3])),
    ("no version", msgpack.packb({"type": "status"})),
    ("wrong version", msgpack.packb({"v": 99, "type": "status"})),
    ("unknown type", msgpack.packb({"v": 1, "type": "frobnicate", "seq": 5})),
    ("bad field type", msgpack.packb({"v": 1, "type": "submit", "seq": 6, "id": 3})),
    ("truncated", msgpack.packb({"v": 1, "type": "status", "pad": "x" * 100})[:20]),
]
failed = 0
for name, body in cases:
    s.send(body)
    if not s.poll(5000):
        print(f"{name}: no reply within 5 s")
        failed += 1
        continue
    reply = msgpack.unpackb(s.recv(), raw=False)
    if reply.get("status") != "error" or not reply.get("message"):
        print(f"{name}: expected an error reply, got {reply}")
        failed += 1
    else:
        print(f"{name}: {reply.get('code')}: {reply.get('message')}")
sys.exit(1 if failed else 0)
