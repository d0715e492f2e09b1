// Sending over REST (ImClient.post / GatewayClient.postMessage) against a real suite:
// the message reaches the peer's socket live, a retry is the same message, members only.
import assert from "node:assert/strict";
import { after, test } from "node:test";

import { ApiError, directConversationId } from "../src/im.js";
import { closeAll, loggedIn, needsSuite, newUser, next } from "./helpers.js";

after(closeAll);

test("a REST post reaches the peer's socket; a retry is the same message", needsSuite, async () => {
  const [a, b] = [await newUser("alice"), await newUser("bob")];
  const alice = await loggedIn(a); // never connects: REST only
  const bob = await loggedIn(b);
  await bob.connect();
  const cid = directConversationId(a.userId, b.userId);

  const atBob = next(bob, "message", (m) => m.conversationId === cid);
  const ack = await alice.post(cid, "no socket here", { clientMsgId: "js-post-1" });
  assert.match(ack.msgId, /^\d+$/, "msgId is a decimal string: it does not fit a JS number");
  assert.deepEqual([ack.clientMsgId, ack.conversationId], ["js-post-1", cid]);
  const got = await atBob;
  assert.deepEqual([got.text, got.msgId, got.senderId, got.seq], ["no socket here", ack.msgId, a.userId, 1]);

  const again = await alice.post(cid, "no socket here", { clientMsgId: "js-post-1" });
  assert.deepEqual(again, ack);
  // Ordered per conversation: once the next message is live, the retry is through too.
  const nextAtBob = next(bob, "message", (m) => m.clientMsgId === "js-post-2");
  const bytes = await alice.gateway.postMessage(cid, "js-post-2", new Uint8Array([0, 1, 255]), {
    contentType: "application/octet-stream",
  });
  await nextAtBob;
  const page = await bob.gateway.history(cid);
  const last = page.messages.at(-1);
  assert.ok(last && last.msgId === bytes.msgId, "the next message comes after the retry");
  assert.deepEqual(Array.from(last.body), [0, 1, 255]);
  assert.deepEqual(page.messages.map((m) => m.msgId), [ack.msgId, bytes.msgId], "stored once");
});

test("a post to someone else's group is refused; reserved types too", needsSuite, async () => {
  const [a, b, e] = [await newUser("alice"), await newUser("bob"), await newUser("eve")];
  const alice = await loggedIn(a);
  const eve = await loggedIn(e);
  const group = await alice.gateway.createGroup("private", [b.userId]);
  await assert.rejects(eve.post(group.conversation_id, "let me in"), (err) => {
    assert.ok(err instanceof ApiError);
    assert.deepEqual([err.status, err.code], [403, "forbidden"]);
    return true;
  });
  await assert.rejects(
    alice.post(group.conversation_id, "", { contentType: "application/vnd.im.recall" }),
    (err) => err instanceof ApiError && err.status === 422,
  );
});
