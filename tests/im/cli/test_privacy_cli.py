"""imctl block, unblock, blocks and privacy against the real gateway harness."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.im.cli.conftest import Imctl
    from tests.services.gateway.conftest import Suite


async def test_block_unblock_and_list(suite: Suite, imctl: Imctl) -> None:
    await suite.register("alice")
    bob = await suite.register("bob")
    code, [done] = await imctl("block", "bob")
    assert code == 0 and done == {"user_id": bob, "blocked": True}
    code, [listed] = await imctl("blocks")
    assert code == 0 and listed == {"blocked": [bob]}
    code, [done] = await imctl("unblock", str(bob))
    assert code == 0 and done == {"user_id": bob, "blocked": False}
    assert (await imctl("blocks"))[1] == [{"blocked": []}]


async def test_privacy_shows_and_sets_invites(suite: Suite, imctl: Imctl) -> None:
    await suite.register("alice")
    assert (await imctl("privacy"))[1] == [{"invites_from_contacts_only": False}]
    code, [now] = await imctl("privacy", "--invites", "contacts")
    assert code == 0 and now == {"invites_from_contacts_only": True}
    assert (await imctl("privacy", "--invites", "everyone"))[1] == [
        {"invites_from_contacts_only": False}
    ]
