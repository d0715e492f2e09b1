// Attachments against a real suite: upload a Blob, send a message referring to it,
// the peer downloads the same bytes; a stranger gets 404.
import assert from "node:assert/strict";
import { after, test } from "node:test";

import { ApiError, directConversationId } from "../src/im.js";
import { closeAll, loggedIn, needsSuite, newUser, next } from "./helpers.js";

after(closeAll);

test("a file sent in a message is downloaded by the peer only", needsSuite, async () => {
  const [a, b, c] = [await newUser("alice"), await newUser("bob"), await newUser("carol")];
  const alice = await loggedIn(a);
  const bob = await loggedIn(b);
  const carol = await loggedIn(c);
  const bytes = new Uint8Array(300_000).map((_, i) => (i * 7) % 256);
  const up = await alice.gateway.uploadAttachment(new Blob([bytes], { type: "image/png" }), {
    filename: "dots.png",
  });
  assert.equal(up.size, bytes.length);
  assert.equal(up.content_type, "image/png");
  assert.match(up.attachment_id, /^[A-Za-z0-9_-]{22}$/);

  await Promise.all([alice.connect(), bob.connect()]);
  const cid = directConversationId(a.userId, b.userId);
  const atBob = next(bob, "message", (m) => m.conversationId === cid);
  await alice.send(cid, "a picture", { attachmentIds: [up.attachment_id] });
  const got = await atBob;
  assert.deepEqual(got.attachmentIds, [up.attachment_id]);

  const blob = await bob.gateway.downloadAttachment(up.attachment_id);
  assert.equal(blob.type, "image/png");
  assert.deepEqual(new Uint8Array(await blob.arrayBuffer()), bytes);
  const { messages } = await bob.gateway.history(cid);
  assert.deepEqual(messages[0].attachmentIds, [up.attachment_id]);

  await assert.rejects(carol.gateway.downloadAttachment(up.attachment_id), (err) => {
    assert.ok(err instanceof ApiError);
    assert.equal(err.status, 404);
    return true;
  });
  await assert.rejects(
    alice.gateway.uploadAttachment(new Blob(["<b>"], { type: "text/html" })),
    (err) => err instanceof ApiError && err.status === 415,
  );
  await Promise.all([alice.close(), bob.close(), carol.close()]);
});
