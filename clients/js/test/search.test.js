// Message search against a real suite: members find what they may read, strangers
// nothing, pages go back in time, and a query is never syntax.
import assert from "node:assert/strict";
import { after, test } from "node:test";

import { ApiError, directConversationId } from "../src/im.js";
import { closeAll, loggedIn, needsSuite, newUser, next } from "./helpers.js";

after(closeAll);

const word = () => `w${Math.random().toString(36).slice(2, 10)}`;

test("both members find a message, a stranger does not", needsSuite, async () => {
  const [a, b, m] = [await newUser("alice"), await newUser("bob"), await newUser("mal")];
  const alice = await loggedIn(a);
  const bob = await loggedIn(b);
  const mallory = await loggedIn(m);
  await Promise.all([alice.connect(), bob.connect()]);
  const cid = directConversationId(a.userId, b.userId);
  const secret = word();
  const atBob = next(bob, "message", (x) => x.conversationId === cid);
  const ack = await alice.send(cid, `see you at the ${secret.toUpperCase()} (tonight)`);
  await atBob; // stored before it is delivered
  for (const client of [alice, bob]) {
    const { hits, nextCursor } = await client.gateway.search(`${secret} tonight`);
    assert.deepEqual(
      hits.map((h) => [h.message.msgId, h.message.conversationId]),
      [[ack.msgId, cid]],
    );
    const [start, end] = hits[0].highlights[0];
    assert.equal(hits[0].snippet.slice(start, end), secret.toUpperCase());
    assert.equal(nextCursor, null);
  }
  assert.deepEqual((await mallory.gateway.search(secret)).hits, []);
  await assert.rejects(
    mallory.gateway.search(secret, { conversationId: cid }),
    (e) => e instanceof ApiError && e.status === 403,
  );
  await assert.rejects(
    alice.gateway.search("*** ---"),
    (e) => e instanceof ApiError && e.status === 422,
  );
  assert.deepEqual((await alice.gateway.search(`"${secret}" OR x*`)).hits, []);
});

test("pages go back in time", needsSuite, async () => {
  const [a, b] = [await newUser("alice"), await newUser("bob")];
  const alice = await loggedIn(a);
  const bob = await loggedIn(b);
  await Promise.all([alice.connect(), bob.connect()]);
  const cid = directConversationId(a.userId, b.userId);
  const topic = word();
  // Accepted is not yet stored; delivered is (the router stores before it delivers).
  // Searching until all three show would run into the per-user search limit.
  const third = next(bob, "message", (x) => x.text === `${topic} number 3`);
  for (const n of [1, 2, 3]) await alice.send(cid, `${topic} number ${n}`);
  await third;
  const texts = (page) => page.hits.map((h) => h.message.text);
  const page = await alice.gateway.search(topic, { conversationId: cid, limit: 2 });
  assert.deepEqual(texts(page), [`${topic} number 3`, `${topic} number 2`]);
  const older = await alice.gateway.search(topic, { cursor: page.nextCursor, limit: 2 });
  assert.deepEqual(texts(older), [`${topic} number 1`]);
  assert.equal(older.nextCursor, null);
});
