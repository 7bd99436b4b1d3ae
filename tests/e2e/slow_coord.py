#!/usr/bin/env python3
"""A stand-in coordinator for eep-scale's timeout tests: answers 'scale' after --scale-delay
seconds and 'scale_status' with phase 'preparing' until --done-after seconds have passed since the
scale request (then 'done'). Binds ADDR, serves until killed or --lifetime seconds pass."""
import argparse
import time

import msgpack
import zmq

ap = argparse.ArgumentParser()
ap.add_argument("addr")
ap.add_argument("--scale-delay", type=float, default=0.0)
ap.add_argument("--done-after", type=float, default=0.0)
ap.add_argument("--lifetime", type=float, default=120.0)
a = ap.parse_args()

ctx = zmq.Context()
s = ctx.socket(zmq.ROUTER)
s.setsockopt(zmq.LINGER, 0)
s.bind(a.addr)
end = time.monotonic() + a.lifetime
parked = []  # (due, identity, reply)
scaled_at = None


def reply(req, **fields):
    r = {"v": 1, "type": req.get("type", "?") + "_reply", "status": "ok"}
    if "seq" in req:
        r["seq"] = req["seq"]
    r.update(fields)
    return r


def view(now):
    done = scaled_at is not None and now - scaled_at >= a.done_after
    return {"id": "op0", "from": 1, "to": 2, "phase": "done" if done else "preparing",
            "phases": [], "done": done, "elapsed_ms": 0.0}


while time.monotonic() < end:
    if s.poll(10):
        frames = s.recv_multipart()
        ident, req = frames[0], msgpack.unpackb(frames[-1], raw=False)
        now = time.monotonic()
        if req.get("type") == "scale":
            scaled_at = now
            parked.append((now + a.scale_delay, ident, reply(req, **view(now))))
        elif req.get("type") == "scale_status":
            s.send_multipart([ident, msgpack.packb(reply(req, **view(now)))])
        else:
            s.send_multipart([ident, msgpack.packb(reply(req))])
    now = time.monotonic()
    for item in [p for p in parked if p[0] <= now]:
        parked.remove(item)
        s.send_multipart([item[1], msgpack.packb(item[2])])
