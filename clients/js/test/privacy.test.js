// Blocking and privacy settings through the SDK, against a real suite.
import assert from "node:assert/strict";
import { after, test } from "node:test";

import { ApiError } from "../src/im.js";
import { closeAll, eventually, loggedIn, needsSuite, newUser } from "./helpers.js";

after(closeAll);

test("a blocked user's sends are refused until the block is lifted", needsSuite, async () => {
  const [a, b] = [await newUser("alice"), await newUser("bob")];
  const alice = await loggedIn(a);
  const bob = await loggedIn(b);
  await bob.connect();
  await alice.gateway.block(b.userId);
  assert.deepEqual(await alice.gateway.blocks(), [b.userId]);
  const refused = async () => {
    try {
      await bob.sendToUser(a.username, "hello?");
      return false; // the block has not reached the connector yet
    } catch (err) {
      return err.code === "FORBIDDEN";
    }
  };
  await eventually(refused, "bob's send refused");
  await alice.gateway.unblock(b.userId);
  assert.deepEqual(await alice.gateway.blocks(), []);
  await eventually(async () => !(await refused()), "bob's send accepted again");
});

test("privacy settings round trip; contacts only refuses a stranger's group", needsSuite, async () => {
  const [a, b] = [await newUser("alice"), await newUser("bob")];
  const alice = await loggedIn(a);
  const bob = await loggedIn(b);
  assert.deepEqual(await alice.gateway.privacy(), { invites_from_contacts_only: false });
  const now = await alice.gateway.setPrivacy({ invites_from_contacts_only: true });
  assert.equal(now.invites_from_contacts_only, true);
  await assert.rejects(bob.gateway.createGroup("team", [a.userId]), (err) => {
    assert.ok(err instanceof ApiError);
    assert.equal(err.status, 403);
    return true;
  });
});
