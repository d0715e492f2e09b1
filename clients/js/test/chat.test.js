// Chat against a real suite: both ways, sync on connect, cumulative acks, groups and
// receipts, sessions.
import assert from "node:assert/strict";
import { after, test } from "node:test";

import { ApiError, directConversationId, ImClient } from "../src/im.js";
import {
  closeAll,
  collect,
  eventually,
  GATEWAY,
  loggedIn,
  needsSuite,
  newUser,
  next,
  track,
} from "./helpers.js";

after(closeAll); // a failed test leaves no socket or timer keeping Node alive

test("two clients chat both ways over WebSocket JSON", needsSuite, async () => {
  const [a, b] = [await newUser("alice"), await newUser("bob")];
  const alice = await loggedIn(a);
  const bob = await loggedIn(b);
  await Promise.all([alice.connect(), bob.connect()]);
  assert.equal(alice.state, "online");
  const cid = directConversationId(a.userId, b.userId);

  const atBob = next(bob, "message", (m) => m.conversationId === cid);
  const ownCopy = next(alice, "message", (m) => m.conversationId === cid);
  const ack = await alice.sendToUser(b.username, "héllo bob ✓");
  assert.match(ack.msgId, /^\d+$/, "msgId is a decimal string: it does not fit a JS number");
  assert.equal(ack.conversationId, cid);
  const got = await atBob;
  assert.deepEqual(
    [got.text, got.seq, got.senderId, got.msgId],
    ["héllo bob ✓", 1, a.userId, ack.msgId],
  );
  assert.equal((await ownCopy).seq, 1, "the sender's own devices learn the seq");

  const atAlice = next(alice, "message", (m) => m.senderId === b.userId);
  await bob.send(cid, "hi alice");
  assert.deepEqual([(await atAlice).text, (await atAlice).seq], ["hi alice", 2]);
  await Promise.all([alice.close(), bob.close()]);
  assert.equal(alice.state, "closed");
});

test("sync on connect hands out what was sent while offline, in order, once", needsSuite, async () => {
  const [a, b] = [await newUser("alice"), await newUser("bob")];
  const alice = await loggedIn(a);
  await alice.connect();
  const cid = directConversationId(a.userId, b.userId);
  for (const text of ["one", "two", "three"]) await alice.send(cid, text);

  const bob = await loggedIn(b);
  const messages = collect(bob, "message");
  const synced = next(bob, "synced");
  await bob.connect(); // online only once synced
  assert.deepEqual(
    messages.map((m) => [m.seq, m.text]),
    [[1, "one"], [2, "two"], [3, "three"]],
  );
  const conversation = (await synced).find((c) => c.conversation_id === cid);
  assert.equal(conversation.unread, 3, "synced, not read");
  // What sync handed out is acknowledged (REST ack): the delivered cursor moved.
  const [mine] = (await bob.gateway.conversations()).filter((c) => c.conversation_id === cid);
  assert.equal(mine.delivered_seq, 3);
  await Promise.all([alice.close(), bob.close()]);
});

test("live messages are acknowledged cumulatively", needsSuite, async () => {
  const [a, b] = [await newUser("alice"), await newUser("bob")];
  const alice = await loggedIn(a);
  const bob = await loggedIn(b);
  await Promise.all([alice.connect(), bob.connect()]);
  const cid = directConversationId(a.userId, b.userId);
  const acks = [];
  const original = bob._sendFrame.bind(bob);
  bob._sendFrame = (frame) => {
    if (frame.deliverAck) acks.push(frame.deliverAck);
    return original(frame);
  };
  await Promise.all([1, 2, 3, 4, 5].map((i) => alice.send(cid, `m${i}`)));
  await eventually(() => bob.cursor(cid) === 5, "bob has all five");
  await eventually(async () => {
    const [c] = (await bob.gateway.conversations()).filter((x) => x.conversation_id === cid);
    return c.delivered_seq === 5;
  }, "the delivered cursor reaches 5");
  assert.ok(acks.length < 5, `acks are batched: ${JSON.stringify(acks)}`);
  assert.equal(acks.at(-1).seq, "5");
  await Promise.all([alice.close(), bob.close()]);
});

test("groups: create, send to all, read receipts pushed and pulled", needsSuite, async () => {
  const [a, b, c] = [await newUser("alice"), await newUser("bob"), await newUser("carol")];
  const [alice, bob, carol] = [await loggedIn(a), await loggedIn(b), await loggedIn(c)];
  await Promise.all([alice.connect(), bob.connect(), carol.connect()]);
  const group = await alice.gateway.createGroup("weekend", [b.userId, c.userId]);
  assert.equal(group.member_count, 3);
  const gid = group.conversation_id;

  const arrivals = [bob, carol].map((x) => next(x, "message", (m) => m.conversationId === gid));
  const ack = await alice.sendToGroup(gid, "who's in?");
  for (const m of await Promise.all(arrivals)) assert.equal(m.text, "who's in?");

  const receipt = next(alice, "receipt", (r) => r.conversationId === gid);
  await bob.read(gid, 1);
  assert.deepEqual(await receipt, { conversationId: gid, readerId: b.userId, readSeq: 1 });
  const pulled = await alice.gateway.receipts(gid, 1);
  assert.deepEqual([pulled.read_count, pulled.unread_count], [1, 1]);
  assert.deepEqual(pulled.read_by.user_ids, [b.userId]);

  const members = await alice.gateway.members(gid);
  assert.deepEqual(members.members.map((m) => m.user_id).sort(), [a.userId, b.userId, c.userId].sort());
  await carol.gateway.leaveGroup(gid);
  assert.equal((await alice.gateway.group(gid)).member_count, 2);
  assert.ok(ack.msgId);
  await Promise.all([alice.close(), bob.close(), carol.close()]);
});

test("sessions: wrong password, refresh rotation, resume, logout", needsSuite, async () => {
  const a = await newUser("alice");
  const client = track(new ImClient(GATEWAY));
  await assert.rejects(client.login(a.username, "wrong-password", "d"), (err) => {
    assert.ok(err instanceof ApiError);
    assert.equal(err.code, "invalid_credentials");
    return true;
  });
  const first = await client.login(a.username, a.password, "d1");
  const sessions = collect(client, "session");
  const second = await client.gateway.refresh();
  assert.notEqual(second.refreshToken, first.refreshToken, "refresh tokens are single use");
  assert.equal(sessions.at(-1).refreshToken, second.refreshToken, "told to store the new one");

  // A reloaded page takes the session up again from its stored refresh token.
  const page = track(new ImClient(GATEWAY));
  await page.resume(second.refreshToken);
  assert.equal((await page.gateway.me()).username, a.username);
  await page.connect();
  await page.close({ logout: true });
  await assert.rejects(client.gateway.me(), (err) => err.status === 401);
});
