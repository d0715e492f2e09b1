"""imctl whoami and logout against the real gateway harness; one-shot commands end
the session of their own device."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.im.cli.conftest import Imctl
    from tests.services.gateway.conftest import Suite


async def test_whoami(suite: Suite, imctl: Imctl) -> None:
    alice = await suite.register("alice")
    code, [me] = await imctl("whoami")
    assert code == 0 and (me["user_id"], me["username"]) == (alice, "alice")


async def test_logout_one_device_or_all(suite: Suite, imctl: Imctl) -> None:
    bob = await suite.register("bob")
    phone = await suite.login("bob", "phone")
    tablet = await suite.login("bob", "tablet")

    code, [problem] = await imctl("logout", user="bob")
    assert code == 1 and "--device ID" in problem["detail"] and "--all" in problem["detail"]

    code, [done] = await imctl("logout", "--device", "phone", user="bob")
    assert code == 0 and done == {"logged_out": "phone", "user_id": bob}
    assert await refused(suite, phone["access_token"])
    assert not await refused(suite, tablet["access_token"])

    code, [done] = await imctl("logout", "--all", user="bob")
    assert code == 0 and done == {"logged_out": "every device", "user_id": bob}
    assert await refused(suite, tablet["access_token"])


async def test_a_one_shot_command_ends_its_own_session_only(suite: Suite, imctl: Imctl) -> None:
    await suite.register("alice")
    phone = await suite.login("alice", "phone")
    code, _ = await imctl("conversations")
    assert code == 0
    assert not await refused(suite, phone["access_token"])


async def refused(suite: Suite, token: str) -> bool:
    r = await suite.client.get("/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    return r.status_code == 401
