"""A Modbus RTU slave built on pymodbus 3.7.4: a stack we did not write, for fieldrelay's tests.

Usage: pymodbus_rtu_slave.py PORT UNIT SPEC_JSON

SPEC_JSON is a list of {"address", "type", "byte_order", "word_order", "value"[, "length"]}.
Every value is encoded with pymodbus' own BinaryPayloadBuilder into holding registers, so the
test checks fieldrelay's decoder against another implementation's encoder.
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


def encode(item):
    builder = BinaryPayloadBuilder(
        byteorder=Endian.LITTLE if item["byte_order"] == "little" else Endian.BIG,
        wordorder=Endian.LITTLE if item["word_order"] == "little" else Endian.BIG,
    )
    kind, value = item["type"], item["value"]
    if kind == "string":
        text = value.encode("ascii")
        text += b"\0" * (item["length"] * 2 - len(text))
        builder.add_string(text.decode("ascii"))
    else:
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
    registers = [0] * 512
    for item in spec:
        words = encode(item)
        registers[item["address"] : item["address"] + len(words)] = words
    block = ModbusSequentialDataBlock(0, registers)
    slave = ModbusSlaveContext(hr=block, ir=block, zero_mode=True)
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
