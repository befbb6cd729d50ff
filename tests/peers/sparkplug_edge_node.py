#!/usr/bin/env python3
"""A tiny Sparkplug edge node on pysparkplug 0.6.1's EdgeNode, to test the test host
(sparkplug_host.py) before it referees the gateway. One device with one Int64 metric "count".

Prints JSON lines: {"event": "ncmd"|"dcmd", "metrics": [{"name", "value"}]} for each command.
Commands on stdin, one JSON object a line:
    {"cmd": "data", "value": n}   DDATA with count = n
    {"cmd": "gap"}                skip one seq, so the next message shows a gap
    {"cmd": "ndeath", "bd_seq": n}   publish an NDEATH with that bdSeq (a stale one)
The node's will is its NDEATH; a test ends the process with SIGKILL to have the broker send it.
"""

import argparse
import json
import sys
import threading

import pysparkplug
from pysparkplug import DataType, Metric

assert pysparkplug.__version__ == "0.6.1", pysparkplug.__version__

lock = threading.Lock()


def say(event, **fields):
    with lock:
        print(json.dumps({"event": event, **fields}), flush=True)


def on_command(kind):
    def callback(_node, message):
        say(
            kind,
            metrics=[{"name": m.name, "value": m.value} for m in message.payload.metrics],
        )

    return callback


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--group", default="g1")
    parser.add_argument("--edge", default="e1")
    parser.add_argument("--device", default="d1")
    args = parser.parse_args()

    node = pysparkplug.EdgeNode(
        group_id=args.group,
        edge_node_id=args.edge,
        metrics=[Metric(timestamp=pysparkplug.get_current_timestamp(), name="up",
                        datatype=DataType.BOOLEAN, value=True)],
        client=pysparkplug.Client(client_id=f"edge-{args.edge}"),
        cmd_callback=on_command("ncmd"),
    )
    node.register(pysparkplug.Device(
        device_id=args.device,
        metrics=[Metric(timestamp=pysparkplug.get_current_timestamp(), name="count",
                        datatype=DataType.INT64, value=0)],
        cmd_callback=on_command("dcmd"),
    ))
    node.connect("127.0.0.1", port=args.port, keepalive=5)
    say("started")
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        if request["cmd"] == "data":
            node.update_device(args.device, [Metric(
                timestamp=pysparkplug.get_current_timestamp(), name="count",
                datatype=DataType.INT64, value=request["value"])])
        elif request["cmd"] == "gap":
            node._seq  # noqa: B018 - takes one seq, which is the point
        elif request["cmd"] == "ndeath":
            death = pysparkplug.NDeath(
                timestamp=pysparkplug.get_current_timestamp(),
                bd_seq_metric=Metric(timestamp=pysparkplug.get_current_timestamp(),
                                     name="bdSeq", datatype=DataType.INT64,
                                     value=request["bd_seq"]),
            )
            node._client.publish(pysparkplug.Message(
                topic=pysparkplug.Topic(message_type=pysparkplug.MessageType.NDEATH,
                                        group_id=args.group, edge_node_id=args.edge),
                payload=death, qos=pysparkplug.QoS.AT_MOST_ONCE, retain=False))
        say("done", cmd=request["cmd"])


if __name__ == "__main__":
    main()
