// What makes "sent" mean something: retransmit, dedupe, reconnect and re-login,
// against a real suite with a socket the test can bend.
import assert from "node:assert/strict";
import { after, test } from "node:test";

import { directConversationId } from "../src/im.js";
import {
  closeAll,
  collect,
  eventually,
  loggedIn,
  needsSuite,
  newUser,
  next,
  tap,
} from "./helpers.js";

after(closeAll); // a failed test leaves no socket or timer keeping Node alive

async function pair(bobOptions = {}, aliceOptions = {}) {
  const [a, b] = [await newUser("alice"), await newUser("bob")];
  const alice = await loggedIn(a, aliceOptions);
  const bob = await loggedIn(b, bobOptions);
  await Promise.all([alice.connect(), bob.connect()]);
  return { a, b, alice, bob, cid: directConversationId(a.userId, b.userId) };
}

test("a Send whose SendAck is missing is sent again and stored once", needsSuite, async () => {
  let dropped = 0;
  const Lossy = tap({ outgoing: (f) => !(f.send && dropped++ === 0) }); // the first Send is lost
  const { alice, bob, cid } = await pair({}, { WebSocket: Lossy, sendTimeoutMs: 300 });
  const ack = await alice.send(cid, "once");
  assert.equal(dropped, 2, "the Send went out twice");
  assert.equal(alice.retransmits, 1);

  // And a reply lost on the way back: the resend gets the same SendAck, stored once.
  let acks = 0;
  const Deaf = tap({ incoming: (f) => (f.sendAck && acks++ === 0 ? [] : [f]) });
  const { alice: alice2, cid: cid2 } = await pair({}, { WebSocket: Deaf, sendTimeoutMs: 300 });
  const ack2 = await alice2.send(cid2, "also once");
  assert.equal(alice2.retransmits, 1);
  const history = await alice2.gateway.history(cid2);
  assert.deepEqual(history.messages.map((m) => m.msgId), [ack2.msgId]);
  assert.deepEqual((await alice.gateway.history(cid)).messages.map((m) => m.msgId), [ack.msgId]);
  await Promise.all([alice.close(), bob.close(), alice2.close()]);
});

test("a Deliver that comes twice is handed out once", needsSuite, async () => {
  const Echo = tap({ incoming: (f) => (f.deliver ? [f, f] : [f]) });
  const { alice, bob, cid } = await pair({ WebSocket: Echo });
  const messages = collect(bob, "message");
  await alice.send(cid, "one");
  await alice.send(cid, "two");
  await eventually(() => bob.cursor(cid) === 2, "bob has both");
  await new Promise((r) => setTimeout(r, 100)); // the copies are in by now
  assert.deepEqual(messages.map((m) => m.text), ["one", "two"]);
  assert.equal(bob.duplicates, 2);
  await Promise.all([alice.close(), bob.close()]);
});

test("a lost socket is reopened with backoff and syncs what it missed", needsSuite, async () => {
  const Tap = tap();
  const { alice, bob, cid } = await pair({ WebSocket: Tap, backoffMs: 200 });
  const states = collect(bob, "state");
  const messages = collect(bob, "message");
  Tap.last.close(); // as a network failure would
  await next(bob, "state", (s) => s.state === "offline");
  await alice.send(cid, "while you were away"); // bob may be offline: it comes by sync
  await next(bob, "state", (s) => s.state === "online");
  await eventually(() => messages.length === 1, "the message arrives");
  assert.equal(messages[0].text, "while you were away");
  assert.deepEqual(
    states.map((s) => s.state),
    ["offline", "connecting", "syncing", "online"],
  );
  assert.equal(bob.connections, 2);
  await Promise.all([alice.close(), bob.close()]);
});

test("Kick{RECONNECT} makes the client log in again and reconnect", needsSuite, async () => {
  const Tap = tap();
  const { alice, bob, cid } = await pair({ WebSocket: Tap });
  const sessions = collect(bob, "session");
  const kicks = collect(bob, "kick");
  const before = bob.gateway.session.refreshToken;
  Tap.last.inject({ kick: { reason: "KICK_REASON_RECONNECT", detail: "draining" } });
  await next(bob, "state", (s) => s.state === "online");
  assert.deepEqual(kicks, [{ reason: "RECONNECT", detail: "draining" }]);
  assert.equal(sessions.length, 1, "one refresh: new tokens and a live connector");
  assert.notEqual(bob.gateway.session.refreshToken, before);
  const arrived = next(bob, "message");
  await alice.send(cid, "still here");
  assert.equal((await arrived).text, "still here");
  await Promise.all([alice.close(), bob.close()]);
});

test("a send made while offline goes out on the next connection", needsSuite, async () => {
  const Tap = tap();
  const { alice, bob, cid } = await pair({}, { WebSocket: Tap, backoffMs: 300 });
  Tap.last.close();
  await next(alice, "state", (s) => s.state === "offline");
  const sent = alice.send(cid, "queued");
  const arrived = next(bob, "message");
  const ack = await sent;
  assert.equal((await arrived).msgId, ack.msgId);
  await Promise.all([alice.close(), bob.close()]);
});

test("another login of the same device ends the session for good", needsSuite, async () => {
  const a = await newUser("alice");
  const first = await loggedIn(a, {}, "phone");
  await first.connect();
  const ended = next(first, "state", (s) => s.state === "closed");
  const device = first.gateway.session.deviceId;
  const second = await loggedIn(a);
  await second.gateway.login(a.username, a.password, device);
  const { reason } = await ended;
  assert.match(reason, /DEVICE_LOGGED_IN_ELSEWHERE|TOKEN_REVOKED/);
  await assert.rejects(first.send("d:1:2", "x"), /closed|not connected/i);
});
