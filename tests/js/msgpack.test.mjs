import { test } from "node:test";
import assert from "node:assert/strict";
import { encodeMsgpack, decodeMsgpack, codecs } from "../../starlette_realtime/static/client.js";

const hex = (bytes) => Buffer.from(bytes).toString("hex");
const roundTrip = (value) => decodeMsgpack(encodeMsgpack(value));

test("scalars use the smallest format", () => {
  const cases = [
    [null, "c0"], [false, "c2"], [true, "c3"],
    [0, "00"], [127, "7f"], [128, "cc80"], [255, "ccff"], [256, "cd0100"], [65535, "cdffff"], [65536, "ce00010000"],
    [2 ** 32 - 1, "ceffffffff"], [2 ** 32, "cf0000000100000000"], [2 ** 53 - 1, "cf001fffffffffffff"],
    [-1, "ff"], [-32, "e0"], [-33, "d0df"], [-128, "d080"], [-129, "d1ff7f"], [-32768, "d18000"],
    [-32769, "d2ffff7fff"], [-(2 ** 31), "d280000000"], [-(2 ** 31) - 1, "d3ffffffff7fffffff"],
    [-(2 ** 53 - 1), "d3ffe0000000000001"],
    [1.5, "cb3ff8000000000000"], ["", "a0"], ["a", "a161"],
  ];
  for (const [value, expected] of cases) {
    assert.equal(hex(encodeMsgpack(value)), expected, `encoding ${value}`);
    assert.deepEqual(decodeMsgpack(Buffer.from(expected, "hex")), value, `decoding ${expected}`);
  }
});

test("strings, binaries, arrays and maps switch header size at the limits", () => {
  for (const [n, head] of [[31, "bf"], [32, "d920"], [255, "d9ff"], [256, "da0100"], [65536, "db00010000"]]) {
    const s = "x".repeat(n);
    assert.ok(hex(encodeMsgpack(s)).startsWith(head), `str of ${n}`);
    assert.equal(roundTrip(s), s);
  }
  for (const [n, head] of [[0, "c400"], [255, "c4ff"], [256, "c50100"], [65536, "c600010000"]]) {
    const b = new Uint8Array(n).map((_, i) => i & 0xff);
    assert.ok(hex(encodeMsgpack(b)).startsWith(head), `bin of ${n}`);
    assert.deepEqual(roundTrip(b), b);
  }
  for (const [n, head] of [[15, "9f"], [16, "dc0010"], [65536, "dd00010000"]]) {
    const a = Array.from({ length: n }, (_, i) => i % 100);
    assert.ok(hex(encodeMsgpack(a)).startsWith(head), `array of ${n}`);
    assert.deepEqual(roundTrip(a), a);
  }
  for (const [n, head] of [[15, "8f"], [16, "de0010"], [65536, "df00010000"]]) {
    const m = Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, i]));
    assert.ok(hex(encodeMsgpack(m)).startsWith(head), `map of ${n}`);
    assert.deepEqual(roundTrip(m), m);
  }
});

test("nested values and unicode round-trip", () => {
  const value = {
    text: "héllo wörld ✓ 🚀",
    list: [1, -1, 2.25, null, true, false, "", [], {}],
    nested: { deep: { deeper: [{ a: 1 }, { b: [2 ** 40, -(2 ** 40)] }] } },
    frame: [5, "/chat", "say", { room: "lobby", text: "hi" }, 2147483647],
  };
  assert.deepEqual(roundTrip(value), value);
});

test("typed arrays and ArrayBuffers encode as bin and decode as Uint8Array", () => {
  const bytes = new Uint8Array([1, 2, 3, 250]);
  assert.deepEqual(roundTrip(bytes.buffer), bytes);
  assert.deepEqual(roundTrip(new Uint8Array([9, 1, 2, 3, 250, 9]).subarray(1, 5)), bytes);
  assert.deepEqual(roundTrip(new Uint16Array([0x0102])), new Uint8Array(new Uint16Array([0x0102]).buffer));
});

test("encoding follows JSON conventions for undefined, toJSON and non-integral numbers", () => {
  assert.deepEqual(roundTrip({ a: undefined, b: 1, f() {} }), { b: 1 });
  assert.deepEqual(roundTrip([undefined]), [null]);
  const date = new Date("2024-01-02T03:04:05.678Z");
  assert.equal(roundTrip(date), date.toJSON());
  assert.equal(roundTrip(2 ** 60), 2 ** 60); // not a safe integer: float64
  assert.ok(Number.isNaN(roundTrip(NaN)));
  assert.equal(roundTrip(-Infinity), -Infinity);
});

test("64-bit integers outside the safe range decode as BigInt", () => {
  assert.equal(decodeMsgpack(Buffer.from("cfffffffffffffffff", "hex")), 2n ** 64n - 1n);
  assert.equal(decodeMsgpack(Buffer.from("d38000000000000000", "hex")), -(2n ** 63n));
  assert.equal(roundTrip(2n ** 60n), 2n ** 60n);
  assert.equal(roundTrip(-5n), -5);
});

test("float32, timestamps and unknown extensions decode", () => {
  assert.equal(decodeMsgpack(Buffer.from("ca3fc00000", "hex")), 1.5);
  // timestamp 32: 2024-01-01T00:00:00Z
  assert.deepEqual(decodeMsgpack(Buffer.from("d6ff65920080", "hex")), new Date("2024-01-01T00:00:00Z"));
  // timestamp 64: 1 s + 500 ms
  const t64 = Buffer.from("d7ff" + (500_000_000 * 4).toString(16).padStart(8, "0") + "00000001", "hex");
  assert.deepEqual(decodeMsgpack(t64), new Date(1500));
  // timestamp 96: nanoseconds 0, seconds -1
  assert.deepEqual(decodeMsgpack(Buffer.from("c70cff00000000ffffffffffffffff", "hex")), new Date(-1000));
  assert.deepEqual(decodeMsgpack(Buffer.from("d40542", "hex")), { type: 5, data: new Uint8Array([0x42]) });
});

test("invalid input throws instead of returning garbage", () => {
  assert.throws(() => decodeMsgpack(Buffer.from("c1", "hex")), RangeError);
  assert.throws(() => decodeMsgpack(Buffer.from("a5616263", "hex")), /truncated/);
  assert.throws(() => decodeMsgpack(Buffer.from("ddffffffff", "hex")), /truncated/);
  assert.throws(() => decodeMsgpack(Buffer.from("0000", "hex")), /trailing/);
});

test("a __proto__ key stays data", () => {
  const decoded = decodeMsgpack(Buffer.from("81a95f5f70726f746f5f5f81a178a179", "hex")); // {"__proto__": {"x": "y"}}
  assert.equal(Object.getPrototypeOf(decoded), Object.prototype);
  assert.deepEqual(Object.keys(decoded), ["__proto__"]);
  assert.equal(decoded.x, undefined);
});

test("codecs reject the wrong kind of WebSocket frame", () => {
  assert.throws(() => codecs.json.decode(new ArrayBuffer(1)), TypeError);
  assert.throws(() => codecs.msgpack.decode("[7]"), TypeError);
  assert.deepEqual(codecs.msgpack.decode(codecs.msgpack.encode([7])), [7]);
  assert.equal(codecs.json.size('"é✓🚀"'), 2 + 2 + 3 + 4);
  assert.equal(codecs.json.size(JSON.stringify("é✓🚀")), Buffer.byteLength(JSON.stringify("é✓🚀")));
});
