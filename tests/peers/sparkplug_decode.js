#!/usr/bin/env node
// Decodes Sparkplug B payloads with npm sparkplug-payload 1.0.3 (Eclipse Tahu's JavaScript
// codec, which we did not write) and prints what it read as JSON: the twin of
// sparkplug_decode.py, same input and output lines.
//
// Input, one JSON object per line on stdin: {"type", "payload": hex, "birth": hex (optional)}.
// Output, one per input: {"ok": true, "timestamp", "seq", "metrics": [...]} or
// {"ok": false, "error"}. A metric: name, alias, datatype (code), value, timestamp,
// is_historical, is_null, properties ({key: {type, value}}). 64-bit integers are printed as
// numbers when exact in a double, else as decimal strings.
//
// sparkplug-payload picks a value's field by the metric's datatype, which DATA and commands
// leave out. A host fills it in from the birth; so does this script (by alias, else by name)
// before handing the payload to decodePayload, and changes nothing else.
//
// Finds the package through NODE_PATH (scripts/test-deps.sh installs it in
// $HOME/.cache/fieldrelay/node/node_modules).
"use strict";

const readline = require("readline");
const sparkplug = require("sparkplug-payload").get("spBv1.0");
const proto = require("sparkplug-payload/lib/sparkplugPayloadProto");
const version = require("sparkplug-payload/package.json").version;

if (version !== "1.0.3") {
  throw new Error(`sparkplug-payload ${version}, expected 1.0.3`);
}

const Payload = proto.org.eclipse.tahu.protobuf.Payload;
const TYPES = [
  "Unknown", "Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64",
  "Float", "Double", "Boolean", "String", "DateTime", "Text", "UUID", "DataSet", "Bytes",
  "File", "Template", "PropertySet", "PropertySetList",
];

function isLong(v) {
  return v !== null && typeof v === "object" && typeof v.toString === "function" &&
    typeof v.high === "number" && typeof v.low === "number";
}

function plain(v) {
  if (v === undefined) return null;
  if (isLong(v)) {
    const text = v.toString();
    const n = Number(text);
    return Number.isSafeInteger(n) ? n : text;
  }
  if (v instanceof Uint8Array) return Buffer.from(v).toString("hex");
  return v;
}

function typeCode(name) {
  const code = TYPES.indexOf(name);
  return code < 0 ? null : code;
}

/** name → datatype and alias → datatype of a birth, from the peer's own decoder. */
function birthTypes(hex) {
  const byAlias = new Map();
  const byName = new Map();
  if (!hex) return { byAlias, byName };
  const birth = Payload.decode(Buffer.from(hex, "hex"));
  for (const m of birth.metrics) {
    if (m.alias !== null && m.alias !== undefined) byAlias.set(String(m.alias), m.datatype);
    if (m.name) byName.set(m.name, m.datatype);
  }
  return { byAlias, byName };
}

function decode(request) {
  const raw = Payload.decode(Buffer.from(request.payload, "hex"));
  const types = birthTypes(request.birth);
  for (const m of raw.metrics) {
    if (!m.datatype) {
      const byAlias = m.alias !== null && m.alias !== undefined ?
        types.byAlias.get(String(m.alias)) : undefined;
      const datatype = byAlias !== undefined ? byAlias : types.byName.get(m.name);
      if (datatype !== undefined) m.datatype = datatype;
    }
  }
  const bytes = Payload.encode(raw).finish();
  const payload = sparkplug.decodePayload(bytes);
  const metrics = (payload.metrics || []).map((m, i) => {
    let properties = null;
    if (m.properties) {
      properties = {};
      for (const [key, p] of Object.entries(m.properties)) {
        properties[key] = { type: typeCode(p.type), value: plain(p.value) };
      }
    }
    return {
      name: m.name === undefined ? null : m.name,
      alias: plain(m.alias),
      datatype: typeCode(m.type),
      value: plain(m.value),
      timestamp: plain(m.timestamp),
      is_historical: m.isHistorical === true,
      is_null: raw.metrics[i].isNull === true,
      properties,
    };
  });
  return {
    ok: true,
    timestamp: plain(payload.timestamp),
    seq: plain(payload.seq),
    metrics,
  };
}

const lines = readline.createInterface({ input: process.stdin });
lines.on("line", (line) => {
  if (!line.trim()) return;
  let result;
  try {
    result = decode(JSON.parse(line));
  } catch (error) {
    result = { ok: false, error: String(error) };
  }
  process.stdout.write(JSON.stringify(result) + "\n");
});
