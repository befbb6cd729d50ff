#!/usr/bin/env python3
"""A Sparkplug B 3.0 host application for the integration tests, built on pysparkplug 0.6.1
(the payload codec) and paho-mqtt 1.6.1: the referee that checks what an edge node publishes.

It does what a primary host does, and records everything it sees and does as JSON lines on
stdout (and in --out FILE), for the Rust tests to assert on:

- connects with a clean session and a will: `spBv1.0/STATE/<host_id>`
  `{"online":false,"timestamp":T}`, QoS 1, retained; subscribes to `spBv1.0/#`; then publishes
  `{"online":true,"timestamp":T}` retained at QoS 1, with the same T (its connect time;
  `payloads-state-birth-payload`). Prints {"event": "ready"} once the subscription and the
  online STATE were acknowledged.
- per edge node (group, edge node id): NBIRTH must have seq 0 and a bdSeq; every later message
  of the node but NDEATH must carry the previous seq + 1 (mod 256). A gap, or data before any
  NBIRTH, is recorded and answered with one NCMD `Node Control/Rebirth = true` (QoS 0), not
  repeated until an NBIRTH arrives. An NDEATH ends the session only if its bdSeq is the one of
  the current NBIRTH; otherwise it is recorded as stale and ignored.
- aliases are resolved with the node's and each device's last birth.

Records (one JSON object a line, each with "event" and "at", ms since the epoch):
    ready, state {online, timestamp},
    message {topic, type, group, edge, device, qos, retain, raw, decoded} (decoded as
        tests/peers/sparkplug_decode.py prints it),
    gap {group, edge, expected, got, type}, out_of_session {group, edge, type},
    rebirth_requested {group, edge}, violation {group, edge, what},
    node_online {group, edge, bd_seq}, node_offline {group, edge, bd_seq},
    stale_ndeath {group, edge, bd_seq, current}, device_offline {group, edge, device},
    sent {topic, type, raw}, error {what}.

Commands, one JSON object a line on stdin:
    {"cmd": "offline"}   publish the offline STATE (same timestamp), then disconnect
    {"cmd": "online"}    connect again with a new timestamp, as at start
    {"cmd": "rebirth", "group": g, "edge": e}
    {"cmd": "dcmd"|"ncmd", "group": g, "edge": e, "device": d (dcmd), "include_dtypes": bool,
     "metrics": [{"name"|"alias", "datatype": "INT16", "value": v}]}
    {"cmd": "quit"}      graceful: offline STATE, disconnect, exit
"""

import argparse
import json
import os
import sys
import threading
import time

import paho.mqtt
import paho.mqtt.client as mqtt
import pysparkplug

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sparkplug_decode import BirthIndex, decode_payload  # noqa: E402

assert pysparkplug.__version__ == "0.6.1", pysparkplug.__version__
assert paho.mqtt.__version__ == "1.6.1", paho.mqtt.__version__

NAMESPACE = "spBv1.0"
REBIRTH = "Node Control/Rebirth"
SEQUENCED = {"NBIRTH", "NDATA", "DBIRTH", "DDATA", "DDEATH"}


def now_ms():
    return int(time.time() * 1000)


class Recorder:
    def __init__(self, path):
        self.lock = threading.Lock()
        self.file = open(path, "a", encoding="utf-8") if path else None

    def __call__(self, event, **fields):
        line = json.dumps({"event": event, "at": now_ms(), **fields})
        with self.lock:
            print(line, flush=True)
            if self.file:
                self.file.write(line + "\n")
                self.file.flush()


class EdgeNode:
    """What the host knows of one edge node."""

    def __init__(self):
        self.online = False
        self.bd_seq = None
        self.next_seq = None
        self.birth = None
        self.device_births = {}
        self.rebirth_pending = False


class Host:
    def __init__(self, args, record):
        self.args = args
        self.record = record
        self.nodes = {}
        self.lock = threading.Lock()
        self.client = None
        self.state_ts = None
        self.subscribed = threading.Event()

    # --- connection and STATE -------------------------------------------------------------

    def state_topic(self):
        return f"{NAMESPACE}/STATE/{self.args.host_id}"

    def state_payload(self, online):
        return json.dumps({"online": online, "timestamp": self.state_ts})

    def connect(self):
        self.state_ts = now_ms()
        self.subscribed.clear()
        client = mqtt.Client(
            client_id=self.args.client_id or f"host-{self.args.host_id}",
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        client.will_set(self.state_topic(), self.state_payload(False), qos=1, retain=True)
        client.on_connect = self.on_connect
        client.on_subscribe = lambda *_: self.subscribed.set()
        client.on_message = self.on_message
        client.connect(self.args.broker, self.args.port, keepalive=self.args.keepalive)
        self.client = client
        client.loop_start()
        if not self.subscribed.wait(10):
            self.record("error", what="no SUBACK within 10 s")
            return
        info = client.publish(self.state_topic(), self.state_payload(True), qos=1, retain=True)
        info.wait_for_publish()
        self.record("state", online=True, timestamp=self.state_ts)
        self.record("ready")

    def on_connect(self, client, _userdata, _flags, rc):
        if rc != 0:
            self.record("error", what=f"CONNACK {rc}")
            return
        # The host's own STATE too (payloads-state-subscribe), with everything else.
        client.subscribe(f"{NAMESPACE}/#", qos=1)

    def go_offline(self):
        if self.client is None:
            return
        info = self.client.publish(
            self.state_topic(), self.state_payload(False), qos=1, retain=True
        )
        info.wait_for_publish()
        self.record("state", online=False, timestamp=self.state_ts)
        self.client.disconnect()
        self.client.loop_stop()
        self.client = None

    # --- messages -------------------------------------------------------------------------

    def on_message(self, _client, _userdata, msg):
        try:
            self.handle(msg)
        except Exception as error:  # noqa: BLE001 - a referee records, it does not crash
            self.record("error", what=f"{type(error).__name__}: {error}", topic=msg.topic)

    def handle(self, msg):
        levels = msg.topic.split("/")
        if len(levels) == 3 and levels[1] == "STATE":
            return  # our own STATE coming back
        if len(levels) not in (4, 5) or levels[0] != NAMESPACE:
            self.record("error", what="not a Sparkplug topic", topic=msg.topic)
            return
        group, kind, edge = levels[1], levels[2], levels[3]
        device = levels[4] if len(levels) == 5 else None
        if kind in ("NCMD", "DCMD"):
            return  # commands, ours included
        with self.lock:
            node = self.nodes.setdefault((group, edge), EdgeNode())
            birth = None
            if kind in ("NDATA",):
                birth = node.birth
            elif kind == "DDATA":
                birth = node.device_births.get(device)
            decoded = decode_payload(kind, msg.payload, birth)
            self.record(
                "message",
                topic=msg.topic,
                type=kind,
                group=group,
                edge=edge,
                device=device,
                qos=msg.qos,
                retain=bool(msg.retain),
                raw=msg.payload.hex(),
                decoded=decoded,
            )
            self.track(group, edge, device, kind, node, msg.payload, decoded)

    def bd_seq_of(self, decoded):
        for metric in decoded["metrics"]:
            if metric.get("name") == "bdSeq":
                return metric.get("value", metric.get("raw_value"))
        return None

    def track(self, group, edge, device, kind, node, raw, decoded):
        where = {"group": group, "edge": edge}
        seq = decoded["seq"]
        if kind == "NDEATH":
            bd_seq = self.bd_seq_of(decoded)
            if seq is not None:
                self.record("violation", what="NDEATH carries a seq", **where)
            if node.online and bd_seq == node.bd_seq:
                node.online = False
                self.record("node_offline", bd_seq=bd_seq, **where)
            else:
                self.record("stale_ndeath", bd_seq=bd_seq, current=node.bd_seq, **where)
            return
        if kind not in SEQUENCED:
            return
        if seq is None:
            self.record("violation", what=f"{kind} without seq", **where)
        if kind == "NBIRTH":
            if seq != 0:
                self.record("violation", what=f"NBIRTH seq {seq}", **where)
            node.online = True
            node.bd_seq = self.bd_seq_of(decoded)
            node.birth = BirthIndex(raw)
            node.device_births = {}
            node.next_seq = 1
            node.rebirth_pending = False
            if node.bd_seq is None:
                self.record("violation", what="NBIRTH without bdSeq", **where)
            self.record("node_online", bd_seq=node.bd_seq, **where)
            return
        if not node.online:
            self.record("out_of_session", type=kind, **where)
            self.request_rebirth(group, edge, node)
            return
        if seq is not None and seq != node.next_seq:
            self.record("gap", expected=node.next_seq, got=seq, type=kind, **where)
            self.request_rebirth(group, edge, node)
        if seq is not None:
            node.next_seq = (seq + 1) % 256
        if kind == "DBIRTH":
            node.device_births[device] = BirthIndex(raw)
        elif kind == "DDEATH":
            node.device_births.pop(device, None)
            self.record("device_offline", device=device, **where)

    # --- commands -------------------------------------------------------------------------

    def request_rebirth(self, group, edge, node):
        if node.rebirth_pending:
            return
        node.rebirth_pending = True
        self.send_command("NCMD", group, edge, None, [
            {"name": REBIRTH, "datatype": "BOOLEAN", "value": True}
        ], include_dtypes=True)
        self.record("rebirth_requested", group=group, edge=edge)

    def send_command(self, kind, group, edge, device, metrics, include_dtypes=False):
        if self.client is None:
            self.record("error", what=f"{kind} while offline")
            return
        payload_class = pysparkplug.NCmd if kind == "NCMD" else pysparkplug.DCmd
        payload = payload_class(
            timestamp=now_ms(),
            metrics=tuple(
                pysparkplug.Metric(
                    timestamp=m.get("timestamp", now_ms()),
                    name=m.get("name"),
                    alias=m.get("alias"),
                    datatype=pysparkplug.DataType[m["datatype"]],
                    value=m.get("value"),
                )
                for m in metrics
            ),
        )
        topic = f"{NAMESPACE}/{group}/{kind}/{edge}" + (f"/{device}" if device else "")
        raw = payload.encode(include_dtypes=include_dtypes)
        self.client.publish(topic, raw, qos=0, retain=False)
        self.record("sent", topic=topic, type=kind, raw=raw.hex())

    def command(self, request):
        cmd = request["cmd"]
        if cmd == "offline":
            self.go_offline()
        elif cmd == "online":
            self.connect()
        elif cmd == "rebirth":
            with self.lock:
                node = self.nodes.setdefault((request["group"], request["edge"]), EdgeNode())
                node.rebirth_pending = False
                self.request_rebirth(request["group"], request["edge"], node)
        elif cmd in ("dcmd", "ncmd"):
            self.send_command(
                cmd.upper(),
                request["group"],
                request["edge"],
                request.get("device"),
                request["metrics"],
                include_dtypes=request.get("include_dtypes", False),
            )
        elif cmd == "quit":
            self.go_offline()
            return False
        else:
            self.record("error", what=f"unknown command {cmd!r}")
        return True


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host-id", default="scada1")
    parser.add_argument("--client-id")
    parser.add_argument("--keepalive", type=int, default=5)
    parser.add_argument("--out", help="also append the records to this file")
    args = parser.parse_args()
    record = Recorder(args.out)
    host = Host(args, record)
    host.connect()
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            if not host.command(json.loads(line)):
                break
        except Exception as error:  # noqa: BLE001
            record("error", what=f"{type(error).__name__}: {error}")
    else:
        host.go_offline()  # stdin closed: the test is over


if __name__ == "__main__":
    main()
