// The im.v1.json encoding, without a suite.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  directConversationId,
  enumName,
  fromBase64,
  groupConversationId,
  messageFromRest,
  messageFromWire,
  toBase64,
} from "../src/wire.js";

test("bodies are base64 of their UTF-8 bytes, whatever their size", () => {
  const text = "héllo ✓ 🎉";
  assert.equal(toBase64(new TextEncoder().encode(text)), Buffer.from(text).toString("base64"));
  const big = new Uint8Array(200_000).map((_, i) => i % 251);
  assert.deepEqual(fromBase64(toBase64(big)), big);
});

test("a message is the same object live and from history", () => {
  const wire = messageFromWire({
    msgId: "9223372036854775813",
    conversationId: "d:1:2",
    seq: "3",
    senderId: "1",
    senderDevice: "web",
    clientMsgId: "c",
    contentType: "text/plain",
    body: Buffer.from("hi ✓").toString("base64"),
    serverTs: "1795735458357",
  });
  const rest = messageFromRest({
    msg_id: "9223372036854775813",
    conversation_id: "d:1:2",
    seq: 3,
    sender_id: 1,
    sender_device: "web",
    client_msg_id: "c",
    content_type: "text/plain",
    body_b64: Buffer.from("hi ✓").toString("base64"),
    text: "hi ✓",
    server_ts: 1795735458357,
  });
  assert.deepEqual(wire, rest);
  assert.equal(wire.msgId, "9223372036854775813", "kept a string: past 2^53");
  assert.equal(wire.text, "hi ✓");
});

test("fields at their default value may be absent", () => {
  const m = messageFromWire({ msgId: "5", conversationId: "g:1" });
  assert.deepEqual([m.seq, m.senderId, m.text, m.body.length], [0, 0, null, 0]);
  assert.equal(enumName(undefined, "ERROR_CODE_"), "UNSPECIFIED");
  assert.equal(enumName("ERROR_CODE_BAD_FRAME", "ERROR_CODE_"), "BAD_FRAME");
});

test("conversation ids", () => {
  assert.equal(directConversationId(9, 2), "d:2:9");
  assert.throws(() => directConversationId(2, 2));
  assert.equal(groupConversationId(7), "g:7");
  assert.equal(groupConversationId("g:7"), "g:7");
});
