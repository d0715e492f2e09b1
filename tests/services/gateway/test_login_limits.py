"""Password guessing and sign-up floods are slowed per client address, never by
locking the account's owner out; X-Forwarded-For counts only from trusted proxies."""

from __future__ import annotations

import pytest

from im.adapters.memory import MemoryKV
from im.clock import FakeClock
from services.gateway.limits import address_key, client_address, parse_networks
from tests.services.gateway.conftest import Suite
from tests.services.gateway.helpers import assert_problem

TRUSTED = {"trusted_proxies": "127.0.0.1/32"}  # the test client is the proxy
ATTACKER = {"X-Forwarded-For": "198.51.100.7"}
OWNER = {"X-Forwarded-For": "203.0.113.9"}
RIGHT = "secret-pass-1"


def fake_time(suite: Suite) -> FakeClock:
    """Limits on a clock the test moves (the waits are seconds to minutes)."""
    clock = FakeClock()
    suite.backends.rate_limits = MemoryKV(clock)
    return clock


async def attempt(
    suite: Suite, username: str, password: str, headers: dict[str, str] | None = None
) -> tuple[int, dict]:
    r = await suite.client.post(
        "/v1/auth/login",
        json={"username": username, "password": password, "device_id": "d"},
        headers=headers or {},
    )
    if r.status_code == 429:
        body = assert_problem(r, 429, "rate_limited")
        assert int(r.headers["retry-after"]) == body["retry_after"] >= 1
        return 429, {"retry_after": int(r.headers["retry-after"])}
    return r.status_code, r.json()


@pytest.mark.parametrize("settings_overrides", [TRUSTED])
async def test_guessing_slows_the_guesser_but_the_owner_logs_in_elsewhere(suite: Suite) -> None:
    clock = fake_time(suite)
    await suite.register("alice")
    statuses, waits = [], []
    for _ in range(30):
        status, body = await attempt(suite, "alice", "wrong guess", ATTACKER)
        statuses.append(status)
        if status == 429:
            waits.append(body["retry_after"])
            clock.advance(body["retry_after"])  # the patient attacker waits it out
    # Five free failures; the sixth earns a wait, and every failure after doubles it.
    assert statuses[:6] == [401] * 6 and statuses[6] == 429
    cap = suite.settings.login_backoff_max_seconds
    assert waits[:10] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
    assert waits[-1] == cap and waits == sorted(waits)
    # While it waits, the attacker's address gets 429 even with the right password...
    assert (await attempt(suite, "alice", RIGHT, ATTACKER))[0] == 429
    # ...but alice, from her own address, is not locked out.
    assert (await attempt(suite, "alice", RIGHT, OWNER))[0] == 200


async def test_one_address_guessing_many_usernames_is_limited(suite: Suite) -> None:
    fake_time(suite)
    await suite.register("alice")
    statuses = [(await attempt(suite, f"user{i}", "guess-123"))[0] for i in range(40)]
    limit = suite.settings.login_failures_per_address
    assert statuses[:limit] == [401] * limit
    assert 429 in statuses and statuses[-1] == 429
    # That address now waits for everyone it logs in as.
    assert (await attempt(suite, "alice", RIGHT))[0] == 429


async def test_successful_logins_do_not_count(suite: Suite) -> None:
    fake_time(suite)
    await suite.register("alice")
    for _ in range(40):
        assert (await attempt(suite, "alice", RIGHT))[0] == 200
    # A success clears the (username, address) count: a typo now and then never adds up.
    for _ in range(4):
        for _ in range(4):
            assert (await attempt(suite, "alice", "typo"))[0] == 401
        assert (await attempt(suite, "alice", RIGHT))[0] == 200


async def test_x_forwarded_for_is_ignored_from_an_untrusted_peer(suite: Suite) -> None:
    fake_time(suite)
    await suite.register("alice")
    for _ in range(6):
        assert (await attempt(suite, "alice", "wrong", ATTACKER))[0] == 401
    # Another header does not make another address: the peer is what counts.
    assert (await attempt(suite, "alice", RIGHT, OWNER))[0] == 429
    # Nor does a different claimed address let the attacker go on.
    assert (await attempt(suite, "alice", "wrong", {"X-Forwarded-For": "192.0.2.1"}))[0] == 429


@pytest.mark.parametrize("settings_overrides", [{"registrations_per_address_per_hour": 3}])
async def test_registrations_per_address_are_limited(suite: Suite) -> None:
    for i in range(3):
        await suite.register(f"bot{i}")
    r = await suite.client.post(
        "/v1/auth/register", json={"username": "bot3", "password": "secret-pass-1"}
    )
    body = assert_problem(r, 429, "rate_limited")
    assert 1 <= int(r.headers["retry-after"]) <= 3600 and body["retry_after"] >= 1
    # An untrusted peer's X-Forwarded-For does not buy a fresh allowance.
    r = await suite.client.post(
        "/v1/auth/register",
        json={"username": "bot4", "password": "secret-pass-1"},
        headers={"X-Forwarded-For": "192.0.2.44"},
    )
    assert r.status_code == 429


@pytest.mark.parametrize(
    "settings_overrides", [{"registrations_per_address_per_hour": 1, **TRUSTED}]
)
async def test_a_trusted_proxy_names_the_registering_address(suite: Suite) -> None:
    ok = {"username": "first", "password": "secret-pass-1"}
    assert (await suite.client.post("/v1/auth/register", json=ok, headers=ATTACKER)).is_success
    again = {"username": "second", "password": "secret-pass-1"}
    r = await suite.client.post("/v1/auth/register", json=again, headers=ATTACKER)
    assert r.status_code == 429
    r = await suite.client.post("/v1/auth/register", json=again, headers=OWNER)
    assert r.status_code == 201


# ---------------------------------------------------------------- addresses


def test_client_address_believes_only_trusted_proxies() -> None:
    proxies = parse_networks("10.0.0.0/8, ::1")
    # No proxy in between: the header is the client's own claim.
    assert client_address("192.0.2.1", "6.6.6.6", proxies) == "192.0.2.1"
    assert client_address("192.0.2.1", None, proxies) == "192.0.2.1"
    # From a trusted proxy: the rightmost address that is not one of ours.
    assert client_address("10.0.0.5", "6.6.6.6, 198.51.100.7", proxies) == "198.51.100.7"
    assert client_address("10.0.0.5", "6.6.6.6, 198.51.100.7, 10.1.2.3", proxies) == (
        "198.51.100.7"
    )
    assert client_address("::1", "2001:db8::7", proxies) == "2001:db8::7"
    # Garbage in the chain: the last address we could vouch for.
    assert client_address("10.0.0.5", "6.6.6.6, not-an-ip", proxies) == "10.0.0.5"
    assert client_address("10.0.0.5", "", proxies) == "10.0.0.5"
    assert client_address("10.0.0.5", "6.6.6.6", []) == "10.0.0.5"  # nothing trusted


def test_address_keys_group_an_ipv6_client_by_its_64() -> None:
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::9")
    assert address_key("2001:db8:1:2::1") != address_key("2001:db8:1:3::1")
    assert address_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert address_key("192.0.2.1") == "192.0.2.1"


def test_bad_trusted_proxy_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        parse_networks("10.0.0.0/8, not-a-network")
