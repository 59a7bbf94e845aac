import { test } from "node:test";
import assert from "node:assert/strict";
import { Backoff, OfflineQueue, isRetryable } from "../../starlette_realtime/static/client.js";
import { FakeClock } from "./helpers.mjs";

test("backoff doubles from min and stops at max", () => {
  const backoff = new Backoff({ min: 1000, max: 30000, jitter: 0.5, random: () => 0.5 });
  const delays = Array.from({ length: 8 }, () => backoff.duration());
  assert.deepEqual(delays, [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
  assert.equal(backoff.attempts, 8);
  backoff.reset();
  assert.equal(backoff.attempts, 0);
  assert.equal(backoff.duration(), 1000);
});

test("jitter spreads each delay by ±randomizationFactor and never exceeds max", () => {
  const low = new Backoff({ min: 1000, max: 5000, jitter: 0.5, random: () => 0 });
  const high = new Backoff({ min: 1000, max: 5000, jitter: 0.5, random: () => 0.999999 });
  assert.deepEqual([low.duration(), low.duration(), low.duration(), low.duration()], [500, 1000, 2000, 2500]);
  assert.deepEqual([high.duration(), high.duration(), high.duration(), high.duration()], [1500, 3000, 5000, 5000]);
  const none = new Backoff({ min: 100, max: 1000, jitter: 0, random: () => 0 });
  assert.deepEqual([none.duration(), none.duration()], [100, 200]);
});

test("backoff survives many attempts and a zero minimum", () => {
  const backoff = new Backoff({ min: 1000, max: 30000, random: () => 0.5 });
  for (let i = 0; i < 2000; i++) backoff.duration();
  assert.equal(backoff.duration(), 30000);
  const zero = new Backoff({ min: 0, max: 10, random: () => 0.5 });
  for (let i = 0; i < 100; i++) assert.equal(zero.duration(), 0);
});

test("close codes: retry or stop as in docs/protocol.md", () => {
  for (const code of [null, undefined, 1001, 1005, 1006, 1011, 1012, 1013, 4000, 4003, 4004, 4005, 4006, 4499]) {
    assert.equal(isRetryable(code), true, `${code} retries`);
  }
  for (const code of [1000, 1002, 1003, 1007, 1008, 1009, 1010, 4500, 4501, 4503, 4999]) {
    assert.equal(isRetryable(code), false, `${code} stops`);
  }
});

test("offline queue drops waiting entries after the TTL and counts them", () => {
  const clock = new FakeClock();
  const expired = [];
  const queue = new OfflineQueue({ ttl: 1000, max: 10, clock, onExpire: (e) => expired.push(e.id) });
  queue.push({ ns: "/a", id: 1 });
  clock.advance(400);
  queue.push({ ns: "/a", id: 2 });
  const inFlight = { ns: "/b", id: 1 };
  queue.push(inFlight);
  inFlight.inFlight = true; // sent: its ack timer, not the TTL, applies
  queue.schedule();
  clock.advance(599);
  assert.deepEqual(expired, []);
  clock.advance(1);
  assert.deepEqual(expired, [1]);
  clock.advance(400);
  assert.deepEqual(expired, [1, 2]);
  assert.equal(queue.dropped, 2);
  assert.equal(queue.size, 1);
  assert.deepEqual(clock.pending(), []);
});

test("offline queue keeps emit order, finds entries by namespace and id, and knows when it is full", () => {
  const queue = new OfflineQueue({ ttl: 1000, max: 3, clock: new FakeClock() });
  queue.push({ ns: "/a", id: 1 });
  queue.push({ ns: "/b", id: 1 });
  assert.equal(queue.full, false);
  queue.push({ ns: "/a", id: 2 });
  assert.equal(queue.full, true);
  assert.deepEqual(queue.entries().map((e) => `${e.ns}#${e.id}`), ["/a#1", "/b#1", "/a#2"]);
  assert.equal(queue.take("/b", 1).ns, "/b");
  assert.equal(queue.take("/b", 1), undefined);
  assert.equal(queue.clear().length, 2);
  assert.equal(queue.size, 0);
});
