// The group lifecycle: changes arrive as system events in the group's stream, invite
// links, a dissolved group refusing sends. Plus the event lines, without a suite.
import assert from "node:assert/strict";
import { after, test } from "node:test";

import { describeGroupEvent, GROUP_EVENT_PREFIX, isGroupEvent, SendError } from "../src/im.js";
import { closeAll, loggedIn, needsSuite, newUser, next } from "./helpers.js";

after(closeAll);

const encoder = new TextEncoder();
const event = (kind, body) => ({ contentType: GROUP_EVENT_PREFIX + kind, body: encoder.encode(JSON.stringify(body)) });
const names = new Map([[1, "alice"], [2, "bob"], [3, "carol"]]);
const nameOf = (id) => names.get(id);

test("group events read as lines", () => {
  assert.equal(describeGroupEvent(event("members_added", { actor_id: 1, user_ids: [2, 3] }), nameOf), "alice added bob, carol");
  assert.equal(describeGroupEvent(event("member_left", { actor_id: 2, user_ids: [2] }), nameOf), "bob left");
  assert.equal(describeGroupEvent(event("renamed", { actor_id: 1, name: "crew" }), nameOf), 'alice renamed the group to "crew"');
  assert.equal(
    describeGroupEvent(event("member_joined", { actor_id: 1, user_ids: [9], approved_by: 1 }), nameOf),
    "user 9 joined (approved by alice)",
  );
  assert.equal(describeGroupEvent(event("members_added", { actor_id: 1, user_ids: [2], count: 50 }), nameOf), "alice added bob and 49 more");
  assert.equal(describeGroupEvent({ contentType: GROUP_EVENT_PREFIX + "dissolved", body: new Uint8Array([255]) }, nameOf), "someone dissolved the group");
  assert.equal(describeGroupEvent({ contentType: "text/plain", body: new Uint8Array() }, nameOf), null);
  assert.ok(isGroupEvent(GROUP_EVENT_PREFIX + "renamed") && !isGroupEvent("text/plain"));
});

test("rename, join by link and dissolve, as members see them", needsSuite, async () => {
  const [a, b, c] = [await newUser("alice"), await newUser("bob"), await newUser("carol")];
  const [alice, bob, carol] = [await loggedIn(a), await loggedIn(b), await loggedIn(c)];
  await Promise.all([alice.connect(), bob.connect(), carol.connect()]);
  const gid = (await alice.gateway.createGroup("team", [b.userId])).conversation_id;

  const renamed = next(bob, "message", (m) => m.conversationId === gid);
  await alice.gateway.renameGroup(gid, "crew");
  const line = describeGroupEvent(await renamed, (id) => (id === a.userId ? "alice" : undefined));
  assert.equal(line, 'alice renamed the group to "crew"');

  const invite = await alice.gateway.createInvite(gid, { maxUses: 1 });
  const joined = next(carol, "message", (m) => m.conversationId === gid);
  assert.equal((await carol.gateway.joinGroup(invite.token)).status, "joined");
  const seen = await joined;
  assert.equal(seen.contentType, GROUP_EVENT_PREFIX + "member_joined");
  assert.equal(seen.senderId, c.userId);
  assert.equal((await alice.gateway.invites(gid))[0].uses, 1);

  const dissolved = next(bob, "message", (m) => m.contentType === GROUP_EVENT_PREFIX + "dissolved");
  assert.equal((await alice.gateway.dissolveGroup(gid)).dissolved, true);
  await dissolved;
  await assert.rejects(bob.send(gid, "anyone?"), (err) => err instanceof SendError);
  const history = await bob.gateway.history(gid, { afterSeq: 0, limit: 10 });
  assert.ok(history.messages.length >= 2, "history stays readable");
  await Promise.all([alice.close(), bob.close(), carol.close()]);
});
