#!/usr/bin/env python3
"""Submits a long request over a real ZMQ socket, aborts it after its first tokens, and checks
the stream ends with finish "abort" (eep-protocol(7)); aborting an unknown id is an error."""
import sys
import time

import msgpack
import zmq

s = zmq.Context().socket(zmq.DEALER)
s.setsockopt(zmq.LINGER, 0)
s.connect(sys.argv[1])


def send(body):
    s.send(msgpack.packb({"v": 1, **body}))


def recv(timeout_s=10):
    if not s.poll(int(timeout_s * 1000)):
        sys.exit("no message within %s s" % timeout_s)
    return msgpack.unpackb(s.recv(), raw=False)


send({"type": "submit", "seq": 1, "id": "long", "prompt": [5, 6, 7], "max_tokens": 900})
tokens, reply = [], None
deadline = time.time() + 30
while len(tokens) < 3 and time.time() < deadline:
    m = recv()
    if m["type"] == "submit_reply":
        reply = m
    elif m["type"] == "tokens":
        tokens += m["tokens"]
assert reply and reply["status"] == "ok", reply
send({"type": "abort", "seq": 2, "id": "long"})
finish, abort_reply = None, None
while finish is None or abort_reply is None:
    m = recv()
    if m["type"] == "abort_reply":
        abort_reply = m
    elif m["type"] == "tokens" and m.get("finish"):
        finish = m["finish"]
assert abort_reply["status"] == "ok", abort_reply
assert finish == "abort", finish
send({"type": "abort", "seq": 3, "id": "nope"})
m = recv()
assert m["status"] == "error" and m["code"] == "not_found", m
print(f"aborted after {len(tokens)} tokens; unknown id: {m['message']}")
