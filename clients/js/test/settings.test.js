// A member's own conversation settings against a real suite: set over REST, told to
// the user's other online devices as a "settings" event, listed pinned first.
import assert from "node:assert/strict";
import { after, test } from "node:test";

import { ApiError } from "../src/im.js";
import { closeAll, loggedIn, needsSuite, newUser, next } from "./helpers.js";

after(closeAll);

test("settings reach the user's other devices and the list", needsSuite, async () => {
  const [a, b] = [await newUser("alice"), await newUser("bob")];
  const laptop = await loggedIn(a, {}, "laptop");
  const phone = await loggedIn(a, {}, "phone");
  await Promise.all([laptop.connect(), phone.connect()]);
  const group = await laptop.gateway.createGroup("team", [b.userId]);
  const cid = group.conversation_id;

  const told = next(phone, "settings", (s) => s.conversationId === cid);
  const stored = await laptop.gateway.updateSettings(cid, { pinned: true, name: "Work" });
  assert.deepEqual([stored.pinned, stored.name, stored.muted], [true, "Work", false]);
  const event = await told;
  assert.deepEqual(
    [event.pinned, event.name, event.mutedUntil, event.updatedAt],
    [true, "Work", 0, stored.updated_at],
  );

  const mutedEvent = next(phone, "settings", (s) => s.mutedUntil === -1);
  const muted = await laptop.gateway.mute(cid);
  assert.equal(muted.muted_until, -1);
  assert.equal((await mutedEvent).mutedUntil, -1, "int64 -1 arrives as a number");

  const [first] = await phone.gateway.conversations();
  assert.equal(first.conversation_id, cid, "pinned first");
  assert.equal(first.settings.muted, true);

  await assert.rejects(laptop.gateway.updateSettings(cid, { name: "x".repeat(65) }), ApiError);
  await Promise.all([laptop.close(), phone.close()]);
});
