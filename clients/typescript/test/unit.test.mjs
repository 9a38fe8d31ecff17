// Unit tests of the client's pure parts (node --test): the SSE framing and
// Retry-After. The behaviour against the running app is tests/it/api.rs.
import { test } from "node:test";
import assert from "node:assert/strict";
// Through the package's own name: its "exports" map is what users import.
import { SseParser, retryAfterMs } from "@crm-events/client";

const bytes = (s) => new TextEncoder().encode(s);
const parseAll = (chunks) => {
  const p = new SseParser();
  return chunks.flatMap((c) => p.push(typeof c === "string" ? bytes(c) : c));
};

test("frames end at a blank line, with LF, CRLF or CR", () => {
  for (const nl of ["\n", "\r\n", "\r"]) {
    const frames = parseAll([`id: 1-0.ab${nl}data: {"a":1}${nl}${nl}event: reset${nl}data: x${nl}${nl}`]);
    assert.deepEqual(frames, [
      { event: "message", data: '{"a":1}', id: "1-0.ab", retry: undefined },
      { event: "reset", data: "x", id: undefined, retry: undefined },
    ]);
  }
});

test("a CRLF split between chunks is one line end", () => {
  const frames = parseAll(["data: a\r", "\ndata: b\r", "\n\r", "\n"]);
  assert.deepEqual(frames.map((f) => f.data), ["a\nb"]);
});

test("a character split between chunks is decoded whole", () => {
  const all = bytes("data: Zoë 🎉\n\n");
  const frames = parseAll([all.slice(0, 9), all.slice(9, 12), all.slice(12)]);
  assert.equal(frames[0].data, "Zoë 🎉");
});

test("comments are skipped; an id-only block is a frame with no data", () => {
  const frames = parseAll([": keepalive\n\nid: 5-0.ab\n\nretry: 3000\n\n"]);
  assert.deepEqual(frames, [
    { event: "message", data: "", id: "5-0.ab", retry: undefined },
    { event: "message", data: "", id: undefined, retry: 3000 },
  ]);
});

test("unknown fields, bad retries and ids with NUL are ignored", () => {
  const frames = parseAll(["foo: bar\nretry: 3s\nid: a\0b\ndata\n\n"]);
  assert.deepEqual(frames, [{ event: "message", data: "", id: undefined, retry: undefined }]);
});

test("Retry-After in seconds or as a date", () => {
  assert.equal(retryAfterMs("5"), 5000);
  assert.equal(retryAfterMs(null), null);
  assert.equal(retryAfterMs("soon"), null);
  const later = retryAfterMs(new Date(Date.now() + 60_000).toUTCString());
  assert.ok(later > 50_000 && later <= 60_000, String(later));
});
