"""A Modbus TCP server that answers reads with malformed frames, for fieldrelay's tests.

Usage: malformed_tcp_slave.py

Listens on 127.0.0.1 on a free port and prints "port N" on stdout. Serves FC 1/2 (bits) and FC 3/4
(registers) reads of any unit and address, one connection after another or several at once.
Each kind of read (bits, registers) goes through MODES in turn: a good reply carries the GOOD
value (registers 100, bits off), every malformed one the BAD value (registers 666, bits on), so
a BAD value anywhere in the gateway's output is a value taken from a malformed frame. After
every mode was served to both kinds, "cycle N" is printed.

Only the standard library: the peer's point is the bytes it puts on the wire.
"""

import asyncio
import struct
import sys

GOOD_REGISTER, BAD_REGISTER = 100, 666
MODES = [
    "good",
    "extra_register",  # one register (or bit byte) more: byte count and MBAP length agree
    "one_short",  # one register (or bit byte) less
    "byte_count_lies",  # the byte count says what was asked, the data is longer
    "wrong_function",  # FC 4 for FC 3, FC 2 for FC 1 (and back)
    "wrong_unit",
    "no_byte_count",  # the PDU is the function code alone
    "bad_protocol_id",
    "stale_then_good",  # a frame of an earlier transaction, then the right one
    "exception",  # a Modbus exception: an answer, no value
]

served = {"bits": 0, "registers": 0}
cycles = 0


def data(function, count, good, extra=0):
    """The data bytes of a read reply: registers or packed bits, `extra` units more or less."""
    if function in (3, 4):
        value = GOOD_REGISTER if good else BAD_REGISTER
        return struct.pack(">H", value) * max(count + extra, 0)
    nbytes = (count + 7) // 8
    byte = 0 if good else 0xFF
    return bytes([byte]) * max(nbytes + extra, 0)


def adu(transaction, unit, pdu, protocol=0):
    return struct.pack(">HHHB", transaction, protocol, len(pdu) + 1, unit) + pdu


def reply(mode, transaction, unit, function, count):
    def read_reply(payload, fc=function):
        return bytes([fc, len(payload) & 0xFF]) + payload

    if mode == "good":
        return adu(transaction, unit, read_reply(data(function, count, True)))
    if mode == "extra_register":
        return adu(transaction, unit, read_reply(data(function, count, False, 1)))
    if mode == "one_short":
        return adu(transaction, unit, read_reply(data(function, count, False, -1)))
    if mode == "byte_count_lies":
        honest = data(function, count, False)
        pdu = bytes([function, len(honest)]) + honest + data(function, 1, False)
        return adu(transaction, unit, pdu)
    if mode == "wrong_function":
        other = {1: 2, 2: 1, 3: 4, 4: 3}[function]
        return adu(transaction, unit, read_reply(data(function, count, False), other))
    if mode == "wrong_unit":
        return adu(transaction, (unit + 1) % 256, read_reply(data(function, count, False)))
    if mode == "no_byte_count":
        return adu(transaction, unit, bytes([function]))
    if mode == "bad_protocol_id":
        return adu(transaction, unit, read_reply(data(function, count, False)), protocol=1)
    if mode == "stale_then_good":
        stale = adu((transaction - 1) % 65536, unit, read_reply(data(function, count, False)))
        return stale + adu(transaction, unit, read_reply(data(function, count, True)))
    if mode == "exception":
        return adu(transaction, unit, bytes([function | 0x80, 2]))
    raise ValueError(mode)


async def serve(reader, writer):
    global cycles
    try:
        while True:
            header = await reader.readexactly(7)
            transaction, _protocol, length, unit = struct.unpack(">HHHB", header)
            pdu = await reader.readexactly(length - 1)
            function = pdu[0]
            if function not in (1, 2, 3, 4) or len(pdu) < 5:
                writer.write(adu(transaction, unit, bytes([function | 0x80, 1])))
                await writer.drain()
                continue
            count = struct.unpack(">H", pdu[3:5])[0]
            kind = "registers" if function in (3, 4) else "bits"
            mode = MODES[served[kind] % len(MODES)]
            served[kind] += 1
            writer.write(reply(mode, transaction, unit, function, count))
            await writer.drain()
            done = min(served.values()) // len(MODES)
            if done > cycles:
                cycles = done
                print(f"cycle {cycles}", flush=True)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(f"port {port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
