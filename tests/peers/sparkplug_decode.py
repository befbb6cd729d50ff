#!/usr/bin/env python3
"""Decodes Sparkplug B payloads with pysparkplug 0.6.1 (a codec we did not write) and prints
what it read as JSON, for the Rust tests to compare with what they encoded.

Input, one JSON object per line on stdin:
    {"type": "NBIRTH|DBIRTH|NDATA|DDATA|DDEATH|NDEATH|NCMD|DCMD",
     "payload": "<hex>",
     "birth": "<hex of the NBIRTH/DBIRTH that declared the aliases>"}   (DATA/CMD only, optional)

Output, one JSON object per input line, in order:
    {"ok": true, "timestamp": int|null, "seq": int|null, "metrics": [metric, ...]}
    {"ok": false, "error": "..."}      (pysparkplug refused the payload)

metric: name, alias, datatype (the code), value (as pysparkplug decoded it; a float is the
exact double of what was sent), timestamp, is_historical, is_null, properties
({key: {"type": code, "value": v}}, read from the protobuf: pysparkplug's Metric has none) and
value_field/raw_value (the protobuf oneof as sent). When pysparkplug's Metric refuses one metric
(e.g. a sign-extended negative Int16, its issue #26), that metric has "error" instead of "value".

pysparkplug's NDeath.decode drops the payload timestamp (an inverted HasField test in 0.6.1), so
the payload-level timestamp and seq are read from the protobuf for every type.
"""

import json
import sys

import pysparkplug
from pysparkplug import _protobuf as pb
from pysparkplug._metric import Metric

assert pysparkplug.__version__ == "0.6.1", pysparkplug.__version__

CLASSES = {
    "NBIRTH": pysparkplug.NBirth,
    "DBIRTH": pysparkplug.DBirth,
    "NDATA": pysparkplug.NData,
    "DDATA": pysparkplug.DData,
    "DDEATH": pysparkplug.DDeath,
    "NDEATH": pysparkplug.NDeath,
    "NCMD": pysparkplug.NCmd,
    "DCMD": pysparkplug.DCmd,
}


def jsonable(value):
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def properties(raw_metric):
    if not raw_metric.HasField("properties"):
        return None
    out = {}
    for key, value in zip(raw_metric.properties.keys, raw_metric.properties.values):
        field = value.WhichOneof("value")
        out[key] = {
            "type": value.type,
            "is_null": value.is_null,
            "value": jsonable(getattr(value, field)) if field else None,
        }
    return out


def metric_json(raw_metric, birth):
    """One metric, decoded by pysparkplug's Metric (after the alias/datatype lookup its payload
    decoder does), with the protobuf facts pysparkplug does not keep."""
    field = raw_metric.WhichOneof("value")
    out = {
        "properties": properties(raw_metric),
        "value_field": field,
        "raw_value": jsonable(getattr(raw_metric, field)) if field else None,
    }
    resolved = pb.Metric()
    resolved.CopyFrom(raw_metric)
    try:
        if birth is not None:
            if not resolved.name:
                resolved.name = birth.get_name(resolved.alias)
            if resolved.datatype == pysparkplug.DataType.UNKNOWN:
                resolved.datatype = birth.get_dtype(resolved.name)
        metric = Metric.from_pb(resolved)
    except Exception as error:  # noqa: BLE001 - report any refusal of the peer
        out.update(
            name=raw_metric.name if raw_metric.HasField("name") else None,
            alias=raw_metric.alias if raw_metric.HasField("alias") else None,
            error=f"{type(error).__name__}: {error}",
        )
        return out
    out.update(
        name=metric.name,
        alias=metric.alias,
        datatype=int(metric.datatype),
        value=jsonable(metric.value),
        timestamp=metric.timestamp,
        is_historical=metric.is_historical,
        is_null=metric.is_null,
    )
    return out


class BirthIndex:
    """The names and datatypes a birth declared, by alias and by name: what a host keeps to read
    later DATA and CMD payloads (the interface pysparkplug's decoders expect of a birth). Built
    from the protobuf, so a birth whose values pysparkplug refuses still resolves aliases."""

    def __init__(self, raw_birth):
        message = pb.Payload.FromString(raw_birth)
        self.names = {m.alias: m.name for m in message.metrics if m.HasField("alias")}
        self.dtypes = {m.name: pysparkplug.DataType(m.datatype) for m in message.metrics}

    def get_name(self, alias):
        return self.names[alias]

    def get_dtype(self, name):
        return self.dtypes[name]


def decode_payload(kind, raw, birth=None):
    """A payload of type `kind` as pysparkplug reads it; `birth`: a BirthIndex for DATA/CMD."""
    # The whole payload through pysparkplug's own decoder first: it must accept it.
    try:
        CLASSES[kind].decode(raw, birth=birth)
        payload_error = None
    except Exception as error:  # noqa: BLE001
        payload_error = f"{type(error).__name__}: {error}"
    message = pb.Payload.FromString(raw)
    return {
        "ok": True,
        "payload_error": payload_error,
        "timestamp": message.timestamp if message.HasField("timestamp") else None,
        "seq": message.seq if message.HasField("seq") else None,
        "metrics": [metric_json(m, birth) for m in message.metrics],
    }


def decode(request):
    birth = BirthIndex(bytes.fromhex(request["birth"])) if request.get("birth") else None
    return decode_payload(request["type"], bytes.fromhex(request["payload"]), birth)


def main():
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            result = decode(json.loads(line))
        except Exception as error:  # noqa: BLE001
            result = {"ok": False, "error": f"{type(error).__name__}: {error}"}
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
