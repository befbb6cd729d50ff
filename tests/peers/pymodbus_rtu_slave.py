"""A Modbus RTU slave built on pymodbus 3.7.4: a stack we did not write, for fieldrelay's tests.

Usage: pymodbus_rtu_slave.py PORT UNIT SPEC_JSON

SPEC_JSON is a list of items, each with a "table" (holding, input, coil, discrete_input; default
holding) and an "address":
- registers: {"type", "byte_order", "word_order", "value"[, "length"]}. Every value is encoded
  with pymodbus' own BinaryPayloadBuilder, so the test checks fieldrelay's decoder against
  another implementation's encoder.
- bits: {"type": "bits", "value": [true, false, ...]} for coils and discrete inputs, packed into
  FC 1/FC 2 replies by pymodbus.
"""

import json
import sys

from pymodbus import FramerType
from pymodbus.constants import Endian
from pymodbus.datastore import (
    ModbusSequentialDataBlock,
    ModbusServerContext,
    ModbusSlaveContext,
)
from pymodbus.payload import BinaryPayloadBuilder
from pymodbus.server import StartSerialServer

SIZE = 512


def encode(item):
    byteorder = Endian.LITTLE if item["byte_order"] == "little" else Endian.BIG
    kind, value = item["type"], item["value"]
    if kind == "string":
        # add_string packs bytes in text order whatever the byte order; repack=True makes
        # to_registers read each pair of bytes in the builder's byte order (a little-endian
        # string has its first character in the low byte).
        builder = BinaryPayloadBuilder(byteorder=byteorder, repack=True)
        text = value.encode("ascii")
        text += b"\0" * (item["length"] * 2 - len(text))
        builder.add_string(text.decode("ascii"))
        return builder.to_registers()
    builder = BinaryPayloadBuilder(
        byteorder=byteorder,
        wordorder=Endian.LITTLE if item["word_order"] == "little" else Endian.BIG,
    )
    adders = {
        "u16": builder.add_16bit_uint,
        "i16": builder.add_16bit_int,
        "u32": builder.add_32bit_uint,
        "i32": builder.add_32bit_int,
        "u64": builder.add_64bit_uint,
        "i64": builder.add_64bit_int,
        "f32": builder.add_32bit_float,
        "f64": builder.add_64bit_float,
    }
    adders[kind](value)
    return builder.to_registers()


def main():
    port, unit, spec = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
    tables = {
        "holding": [0] * SIZE,
        "input": [0] * SIZE,
        "coil": [False] * SIZE,
        "discrete_input": [False] * SIZE,
    }
    for item in spec:
        table = tables[item.get("table", "holding")]
        values = item["value"] if item["type"] == "bits" else encode(item)
        table[item["address"] : item["address"] + len(values)] = values
    slave = ModbusSlaveContext(
        hr=ModbusSequentialDataBlock(0, tables["holding"]),
        ir=ModbusSequentialDataBlock(0, tables["input"]),
        co=ModbusSequentialDataBlock(0, tables["coil"]),
        di=ModbusSequentialDataBlock(0, tables["discrete_input"]),
        zero_mode=True,
    )
    context = ModbusServerContext(slaves={unit: slave}, single=False)
    print("ready", flush=True)
    StartSerialServer(
        context=context,
        framer=FramerType.RTU,
        port=port,
        baudrate=19200,
        parity="N",  # a pty refuses parity settings; the bytes are the same
        bytesize=8,
        stopbits=1,
    )


if __name__ == "__main__":
    main()
