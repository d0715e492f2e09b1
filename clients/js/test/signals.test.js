// Typing and presence: the tracker's expiry on a fake clock, and against a real suite
// a member's typing, a stranger's refusal, a peer coming online, the presence endpoint.
import assert from "node:assert/strict";
import { after, test } from "node:test";

import { ApiError, directConversationId, TypingTracker } from "../src/im.js";
import { closeAll, loggedIn, needsSuite, newUser, next } from "./helpers.js";

after(closeAll);

test("a STARTED runs out after its expiry unless refreshed; STOPPED ends it", () => {
  let now = 1000;
  const tracker = new TypingTracker(() => now);
  const started = { conversationId: "d:1:2", userId: 2, started: true, expiresInMs: 5000 };
  tracker.update(started);
  assert.deepEqual(tracker.typingIn("d:1:2"), [2]);
  now += 4000;
  tracker.update(started); // refreshed
  now += 4000;
  assert.deepEqual(tracker.typingIn("d:1:2"), [2]);
  now += 1500;
  assert.deepEqual(tracker.typingIn("d:1:2"), []);
  tracker.update(started);
  tracker.update({ ...started, started: false });
  assert.deepEqual(tracker.typingIn("d:1:2"), []);
});

test("bob sees alice typing; a stranger is refused; presence is pushed and served", needsSuite, async () => {
  const [a, b, c] = [await newUser("alice"), await newUser("bob"), await newUser("carol")];
  const bob = await loggedIn(b);
  const cid = directConversationId(a.userId, b.userId);
  await bob.gateway.directConversation(a.userId);
  await bob.connect();

  const alice = await loggedIn(a);
  const online = next(bob, "presence", (p) => p.userId === a.userId);
  await alice.connect();
  assert.equal((await online).online, true);

  const typing = next(bob, "typing");
  assert.equal(alice.sendTyping(cid), true);
  const got = await typing;
  assert.deepEqual([got.conversationId, got.userId, got.started], [cid, a.userId, true]);
  assert.ok(got.expiresInMs > 0);
  assert.deepEqual(bob.typingIn(cid), [a.userId]);

  const carol = await loggedIn(c);
  await carol.connect();
  const refused = next(carol, "error");
  carol.sendTyping(cid);
  assert.equal((await refused).code, "FORBIDDEN");

  const members = await alice.gateway.conversationPresence(cid);
  assert.deepEqual(
    members.map((m) => [m.user_id, m.online]),
    [[b.userId, true]],
  );
  await assert.rejects(carol.gateway.conversationPresence(cid), (e) => e instanceof ApiError && e.status === 403);
  assert.equal((await alice.gateway.setPresenceVisible(false)).visible, false);
  assert.deepEqual(await bob.gateway.conversationPresence(cid), [
    { user_id: a.userId, online: false, last_seen_ms: null },
  ]);
});
