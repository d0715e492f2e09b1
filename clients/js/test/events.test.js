// Recall and edit: the SDK's methods against a real suite, and applyEvent on a view.
import assert from "node:assert/strict";
import { after, test } from "node:test";

import { ApiError, applyEvent, directConversationId, displayText, EDIT, RECALL } from "../src/im.js";
import { closeAll, loggedIn, needsSuite, newUser, next } from "./helpers.js";

after(closeAll);

test("an edit and a recall reach the peer as events; history shows the current state", needsSuite, async () => {
  const [a, b] = [await newUser("alice"), await newUser("bob")];
  const alice = await loggedIn(a);
  const bob = await loggedIn(b);
  await Promise.all([alice.connect(), bob.connect()]);
  const cid = directConversationId(a.userId, b.userId);
  const view = new Map();
  bob.on("message", (m) => {
    if (!applyEvent(view, m)) view.set(m.msgId, m);
  });

  const original = next(bob, "message", (m) => m.conversationId === cid);
  const ack = await alice.send(cid, "helo");
  await original;

  const edited = next(bob, "message", (m) => m.contentType === EDIT);
  const edit = await alice.edit(cid, ack.msgId, "hello");
  const editEvent = await edited;
  assert.deepEqual([editEvent.refersTo, editEvent.text, editEvent.msgId], [ack.msgId, "hello", edit.msg_id]);
  assert.equal(displayText(view.get(ack.msgId)), "hello (edited)");
  const [first] = (await bob.gateway.history(cid)).messages;
  assert.deepEqual([first.text, first.editedAt], ["hello", editEvent.serverTs]);

  const recalled = next(bob, "message", (m) => m.contentType === RECALL);
  await alice.recall(cid, ack.msgId);
  assert.equal((await recalled).refersTo, ack.msgId);
  assert.equal(displayText(view.get(ack.msgId)), "message recalled");
  const history = (await bob.gateway.history(cid)).messages;
  assert.deepEqual(
    history.map((m) => [m.seq, m.recalled, m.body.length]),
    [
      [1, true, 0],
      [2, false, 0], // the edit's text went with the recall
      [3, false, 0],
    ],
  );

  await assert.rejects(bob.recall(cid, ack.msgId), (e) => e instanceof ApiError && e.status === 403);
  await assert.rejects(
    alice.edit(cid, ack.msgId, "again"),
    (e) => e instanceof ApiError && e.status === 409 && e.code === "already_recalled",
  );
  await Promise.all([alice.close(), bob.close()]);
});

test("applyEvent: edits, a recall, replays and strangers", () => {
  const msg = (msgId, seq, text, contentType = "text/plain", refersTo = "") => ({
    msgId, conversationId: "g:1", seq, senderId: 1, senderDevice: "", clientMsgId: "",
    contentType, body: new TextEncoder().encode(text), text, serverTs: seq * 100,
    refersTo, editedAt: 0, recalled: false,
  });
  const view = new Map();
  const stream = [
    msg("1", 1, "helo"),
    msg("2", 2, "hello", EDIT, "1"),
    msg("3", 3, "", RECALL, "9"), // not in the view
    msg("4", 4, "", RECALL, "1"),
    msg("5", 5, "late", EDIT, "1"),
  ];
  for (const m of [...stream, ...stream.slice(1)]) if (!applyEvent(view, m)) view.set(m.msgId, m);
  assert.deepEqual([...view.keys()], ["1"]);
  assert.equal(displayText(view.get("1")), "message recalled");
  assert.equal(view.get("1").body.length, 0);
});
