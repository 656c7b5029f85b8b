#!/usr/bin/env python3
"""How late a delayed will arrives: N clients with a 1 s Will Delay drop
their sockets; a watcher records when each will arrives. Prints the
lateness past the delay (ms): min, median, max.

    perf/will_lateness.py [--port 1883] [--clients 20] [--delay 1]

Needs paho-mqtt 2 (tools/test.sh installs it into target/py-venv).
"""
import argparse
import statistics
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, default=1883)
ap.add_argument("--clients", type=int, default=20)
ap.add_argument("--delay", type=int, default=1)
args = ap.parse_args()

arrived = {}
lock = threading.Lock()


def on_message(_c, _u, m):
    with lock:
        arrived.setdefault(m.payload.decode(), time.monotonic())


watch = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, "wl-watch", protocol=mqtt.MQTTv5)
watch.on_message = on_message
watch.connect("127.0.0.1", args.port)
watch.subscribe("wl/#", qos=0)
watch.loop_start()
time.sleep(0.3)

dropped = {}
for i in range(args.clients):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, f"wl-{i}", protocol=mqtt.MQTTv5)
    wp = Properties(PacketTypes.WILLMESSAGE)
    wp.WillDelayInterval = args.delay
    c.will_set(f"wl/{i}", f"{i}", qos=0, properties=wp)
    cp = Properties(PacketTypes.CONNECT)
    cp.SessionExpiryInterval = 60
    c.connect("127.0.0.1", args.port, clean_start=True, properties=cp)
    c.loop(timeout=0.5)
    # Offset the drops so that they do not share one tick of a polled timer.
    time.sleep(0.037)
    dropped[str(i)] = time.monotonic()
    c.socket().close()

deadline = time.monotonic() + args.delay + 5
while time.monotonic() < deadline:
    with lock:
        if len(arrived) == args.clients:
            break
    time.sleep(0.01)
watch.loop_stop()
late = sorted((arrived[k] - dropped[k] - args.delay) * 1000 for k in arrived)
print(
    f"wills {len(late)}/{args.clients}, late past {args.delay} s (ms): "
    f"min {late[0]:.1f}, median {statistics.median(late):.1f}, max {late[-1]:.1f}"
)
