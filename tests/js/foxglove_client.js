// A Foxglove WebSocket client written by others (@foxglove/ws-protocol) with Foxglove's ROS 2
// CDR reader (@foxglove/rosmsg + @foxglove/rosmsg2-serialization): connects to URL, subscribes
// to every channel the server advertises, decodes every message from the channel's ros2msg
// schema and prints, when the server goes away (or after TIMEOUT_MS), one JSON object:
// {channels: {topic: {schemaName, schemaEncoding, encoding}}, messages: {topic: [{stamp, logTime,
// bytes, trailing, summary}]}, errors: [...]}. Used by tests/test_foxglove_live.py.
//
// With EXPECT, it leaves as soon as every advertised /priorocc/ channel brought EXPECT messages.
// On stderr, "subscribed N channels" once it has subscribed to an advertisement's N channels.
//
//   node foxglove_client.js ws://127.0.0.1:PORT [TIMEOUT_MS] [SUBPROTOCOL] [EXPECT]
"use strict";
const { FoxgloveClient } = require("@foxglove/ws-protocol");
const { parse } = require("@foxglove/rosmsg");
const { MessageReader } = require("@foxglove/rosmsg2-serialization");
const WebSocket = require("ws");

const url = process.argv[2];
const timeoutMs = Number(process.argv[3] || 120000);
// foxglove-sdk servers speak "foxglove.sdk.v1" (the ws-protocol spec under a new name)
const subprotocol = process.argv[4] || "foxglove.sdk.v1";
const expect = Number(process.argv[5] || 0);

const channels = {};
const messages = {};
const errors = [];
const readers = new Map(); // subscription id -> {topic, reader}

function toNs(t) {
  return (BigInt(t.sec) * 1000000000n + BigInt(t.nanosec)).toString();
}

function stampOf(msg) {
  if (msg.header) return toNs(msg.header.stamp);
  if (msg.markers && msg.markers.length) return toNs(msg.markers[0].header.stamp);
  if (msg.transforms && msg.transforms.length) return toNs(msg.transforms[0].header.stamp);
  if (msg.status && msg.status.length) return null;
  return null;
}

function summary(msg) {
  if (msg.markers) return { markers: msg.markers.length, points: msg.markers.reduce((n, m) => n + m.points.length, 0),
                            frame: msg.markers.length ? msg.markers[0].header.frame_id : "" };
  if (msg.fields && msg.point_step !== undefined) return { width: msg.width, fields: msg.fields.map((f) => f.name),
                                                            dataBytes: msg.data.length, frame: msg.header.frame_id };
  if (msg.info && msg.data) return { width: msg.info.width, height: msg.info.height, cells: msg.data.length,
                                     frame: msg.header.frame_id };
  if (msg.encoding !== undefined && msg.height !== undefined) return { width: msg.width, height: msg.height,
                                                                      encoding: msg.encoding, dataBytes: msg.data.length };
  if (msg.format !== undefined) return { format: msg.format, dataBytes: msg.data.length };
  if (msg.transforms) return { transforms: msg.transforms.length };
  if (msg.status) return { status: msg.status.map((s) => s.name), values: msg.status.length ? msg.status[0].values.length : 0 };
  return { keys: Object.keys(msg) };
}

let done = false;
function finish(code) {  // prints what it has and leaves (at the first error too)
  if (done) return;
  done = true;
  process.stdout.write(JSON.stringify({ channels, messages, errors }) + "\n");
  process.exit(code);
}

const ws = new WebSocket(url, [subprotocol]);
const client = new FoxgloveClient({ ws });
client.on("error", (e) => errors.push(String(e && e.message ? e.message : e)));
client.on("advertise", (chs) => {
  for (const ch of chs) {
    channels[ch.topic] = { schemaName: ch.schemaName, schemaEncoding: ch.schemaEncoding, encoding: ch.encoding };
    let reader = null;
    try {
      reader = new MessageReader(parse(ch.schema, { ros2: true }));
    } catch (e) {
      errors.push(`${ch.topic}: schema does not parse: ${e.message}`);
      finish(1);
    }
    const id = client.subscribe(ch.id);
    readers.set(id, { topic: ch.topic, reader });
    messages[ch.topic] = messages[ch.topic] || [];
  }
  // one line per advertisement handled: a test starts its data once the client listens
  process.stderr.write(`subscribed ${chs.length} channels\n`);
});
client.on("message", ({ subscriptionId, timestamp, data }) => {
  const sub = readers.get(subscriptionId);
  if (!sub || !sub.reader) return;
  try {
    const msg = sub.reader.readMessage(data);
    messages[sub.topic].push({ stamp: stampOf(msg), logTime: timestamp.toString(), bytes: data.byteLength,
                               trailing: sub.reader.lastReadHadTrailingBytes(), summary: summary(msg) });
    const outs = Object.keys(messages).filter((t) => t.startsWith("/priorocc/"));
    if (expect > 0 && outs.length && outs.every((t) => messages[t].length >= expect)) {
      ws.close();
      finish(0);
    }
  } catch (e) {
    errors.push(`${sub.topic}: message does not decode: ${e.message}`);
    finish(1);
  }
});
client.on("close", () => finish(0));
ws.on("close", () => finish(0));
setTimeout(() => { errors.push(`timeout after ${timeoutMs} ms`); finish(1); }, timeoutMs);
