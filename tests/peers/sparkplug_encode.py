#!/usr/bin/env python3
"""Encodes NCMD/DCMD payloads with pysparkplug 0.6.1, as a host application built on it would
send them, for the Rust tests to decode with the gateway's codec.

Input, one JSON object per line on stdin:
    {"type": "NCMD|DCMD", "timestamp": ms, "include_dtypes": bool,
     "metrics": [{"name": str|null, "alias": int|null, "datatype": "INT16", "value": v,
                  "timestamp": ms|null}]}
Output, one line per input: {"ok": true, "payload": "<hex>"} or {"ok": false, "error": "..."}.

`include_dtypes` is what pysparkplug's Client.publish passes: False by default, so a command
carries no datatype and the node decodes it as the type its birth declared.
"""

import json
import sys

import pysparkplug

assert pysparkplug.__version__ == "0.6.1", pysparkplug.__version__

KINDS = {"NCMD": pysparkplug.NCmd, "DCMD": pysparkplug.DCmd}


def encode(request):
    metrics = tuple(
        pysparkplug.Metric(
            timestamp=m.get("timestamp"),
            name=m.get("name"),
            datatype=pysparkplug.DataType[m["datatype"]],
            value=m.get("value"),
            alias=m.get("alias"),
        )
        for m in request["metrics"]
    )
    payload = KINDS[request["type"]](timestamp=request["timestamp"], metrics=metrics)
    return payload.encode(include_dtypes=request.get("include_dtypes", False)).hex()


def main():
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            result = {"ok": True, "payload": encode(json.loads(line))}
        except Exception as error:  # noqa: BLE001
            result = {"ok": False, "error": f"{type(error).__name__}: {error}"}
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
