"""The store contract, run against both implementations: SQLite and a real redis-server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pdp.store import (
    MAX_TOOLS_PER_AGENT,
    OTHER_TOOLS,
    AgentActivity,
    KeyRecord,
    Store,
    StoreError,
    open_store,
)
from tests.redis_process import redis_server, redis_url  # noqa: F401  (fixtures)

NOW = 1_800_000_000.0
BOT = "spiffe://acme.example/agents/support-bot"
OTHER = "spiffe://acme.example/agents/other-bot"


@pytest.fixture(params=["sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite://{tmp_path / 'pdp.sqlite3'}"
    else:
        url = request.getfixturevalue("redis_url")
    opened = await open_store(url)
    yield opened
    await opened.close()


def key_record(kid: str, **changes: object) -> KeyRecord:
    values: dict[str, object] = {
        "kid": kid,
        "alg": "ES256",
        "jwk": {"kty": "EC", "kid": kid},
        "node": "n1",
        "created_at": NOW,
        "state": "current",
        "generation": 0,
    }
    values.update(changes)
    return KeyRecord(**values)  # type: ignore[arg-type]


async def test_a_revoked_jti_is_reported_revoked(store: Store) -> None:
    await store.revoke("jti-1", BOT, until=9e9, now=NOW)

    assert (await store.credential_state("jti-1", BOT))[0] is True
    assert (await store.credential_state("jti-2", BOT))[0] is False


async def test_an_agent_never_changed_has_no_state(store: Store) -> None:
    assert await store.credential_state("jti-1", BOT) == (False, None)


async def test_disable_then_enable_sets_status_and_a_credential_watermark(store: Store) -> None:
    disabled = await store.set_agent_status(BOT, "disabled", "offboarded", NOW)
    assert (disabled.status, disabled.reason, disabled.changed_at) == (
        "disabled",
        "offboarded",
        NOW,
    )
    assert set(await store.disabled_agents()) == {BOT}
    assert not disabled.active_for(NOW + 10)

    enabled = await store.set_agent_status(BOT, "active", None, NOW + 5)

    assert await store.disabled_agents() == {}
    assert enabled.credentials_not_before == int(NOW) + 1  # the second after the disable
    assert not enabled.active_for(NOW)  # issued in or before the disable's second: dead
    assert enabled.active_for(NOW + 1)
    assert (await store.credential_state("j", BOT))[1] == enabled


async def test_enable_revokes_credentials_minted_while_disabled(store: Store) -> None:
    await store.set_agent_status(BOT, "disabled", "x", NOW)
    late = AgentActivity(BOT, NOW + 1, NOW + 1, allowed=1)  # a replica that had not heard
    late.credentials = [("late", int(NOW) + 60)]
    await store.record_activity([late], NOW + 1)

    await store.set_agent_status(BOT, "active", None, NOW + 2)

    assert (await store.credential_state("late", BOT))[0] is True
    assert (await store.list_agents(NOW + 3))[0].credentials_outstanding == 0


async def test_activity_adds_up_across_batches(store: Store) -> None:
    first = AgentActivity(BOT, NOW, NOW + 1, allowed=2, denied=1, tools={"jira.search": 2})
    first.credentials = [("c1", int(NOW) + 60), ("c2", int(NOW) + 60)]
    second = AgentActivity(BOT, NOW - 5, NOW + 3, allowed=1, tools={"llm": 1})
    second.credentials = [("c3", int(NOW) + 60)]
    await store.record_activity([first], NOW)
    await store.record_activity([second, AgentActivity(OTHER, NOW, NOW, denied=1)], NOW)

    records = {r.spiffe_id: r for r in await store.list_agents(NOW)}

    bot = records[BOT]
    assert (bot.first_seen, bot.last_seen, bot.decisions_allowed, bot.decisions_denied) == (
        NOW - 5,
        NOW + 3,
        3,
        1,
    )
    assert (bot.tools_used, bot.credentials_outstanding, bot.status) == (
        ["jira.search", "llm"],
        3,
        "active",
    )
    assert bot.tool_counts == {"jira.search": 2, "llm": 1}
    assert (records[OTHER].decisions_denied, records[OTHER].credentials_outstanding) == (1, 0)


async def test_distinct_tool_names_per_agent_are_capped_and_the_rest_counted(store: Store) -> None:
    many = {f"tool.n{i:03d}": 1 for i in range(MAX_TOOLS_PER_AGENT - 1)}
    await store.record_activity([AgentActivity(BOT, NOW, NOW, allowed=63, tools=many)], NOW)
    more = {"tool.last": 2, "tool.n000": 1}  # the 64th name, and a known one
    await store.record_activity([AgentActivity(BOT, NOW, NOW, allowed=3, tools=more)], NOW)
    again = {"tool.beyond": 3, "tool.further": 4}
    await store.record_activity([AgentActivity(BOT, NOW, NOW, allowed=7, tools=again)], NOW)

    (bot,) = await store.list_agents(NOW)

    assert len(bot.tools_used) == MAX_TOOLS_PER_AGENT + 1  # the names, plus "(other)"
    assert bot.tool_counts["tool.n000"] == 2 and bot.tool_counts["tool.last"] == 2
    assert bot.tool_counts[OTHER_TOOLS] == 7  # tool.beyond and tool.further
    assert "tool.beyond" not in bot.tool_counts


async def test_outstanding_credentials_drop_when_revoked_expired_or_disabled(
    store: Store,
) -> None:
    activity = AgentActivity(BOT, NOW, NOW, allowed=3)
    activity.credentials = [("a", int(NOW) + 10), ("b", int(NOW) + 100), ("c", int(NOW) + 100)]
    await store.record_activity([activity], NOW)
    await store.revoke("b", BOT, until=NOW + 130, now=NOW)

    [later] = await store.list_agents(NOW + 50)  # "a" expired, "b" revoked
    assert later.credentials_outstanding == 1

    await store.set_agent_status(BOT, "disabled", "x", NOW + 51)
    [disabled] = await store.list_agents(NOW + 52)
    assert (disabled.status, disabled.reason, disabled.credentials_outstanding) == (
        "disabled",
        "x",
        0,
    )


async def test_key_records_round_trip_update_and_delete(store: Store) -> None:
    await store.put_keys([key_record("k1"), key_record("k2", node="n2")])
    retired = key_record("k1", state="retired", retired_at=NOW + 1, drop_after=NOW + 331)
    await store.put_keys([retired])

    assert await store.list_keys() == [retired, key_record("k2", node="n2")]

    await store.delete_key("k1")
    assert [r.kid for r in await store.list_keys()] == ["k2"]


async def test_rotation_generation_counts_up_from_zero(store: Store) -> None:
    assert await store.rotation_generation() == 0
    assert [await store.bump_rotation_generation() for _ in range(2)] == [1, 2]
    assert await store.rotation_generation() == 2


async def test_sqlite_state_survives_reopening(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'pdp.sqlite3'}"
    first = await open_store(url)
    await first.revoke("jti-1", BOT, until=9e9, now=NOW)
    await first.set_agent_status(BOT, "disabled", "gone", NOW)
    await first.close()

    second = await open_store(url)
    try:
        revoked, state = await second.credential_state("jti-1", BOT)
    finally:
        await second.close()

    assert (revoked, state and state.status) == (True, "disabled")
    assert (tmp_path / "pdp.sqlite3").stat().st_mode & 0o777 == 0o600


async def test_expired_revocations_are_purged(tmp_path: Path) -> None:
    store = await open_store(f"sqlite://{tmp_path / 'pdp.sqlite3'}")
    try:
        await store.revoke("old", None, until=NOW + 1, now=NOW)
        await store.record_activity([AgentActivity(BOT, NOW, NOW)], NOW + 2)
        assert (await store.credential_state("old", BOT))[0] is False
    finally:
        await store.close()


async def test_an_unreachable_redis_is_a_store_error() -> None:
    from tests.conftest import free_port

    with pytest.raises(StoreError, match="cannot reach the Redis store"):
        await open_store(f"redis://127.0.0.1:{free_port()}/0")


async def test_an_unknown_store_scheme_is_refused() -> None:
    with pytest.raises(StoreError, match="unsupported store URL scheme"):
        await open_store("memcached://x")


def test_the_registry_counts_tools_and_buckets_names_outside_the_character_set() -> None:
    from pdp.agents import AgentRegistry

    registry = AgentRegistry(None, clock=lambda: NOW)  # type: ignore[arg-type]
    for name in ["jira.search", "jira.search", "jira.search:write", "jira.se\u200barch", None]:
        registry.observe(BOT, allowed=True, tool=name, credential=None)
    for i in range(2 * MAX_TOOLS_PER_AGENT):
        registry.observe(BOT, allowed=True, tool=f"t{i}", credential=None)

    tools = registry._pending[BOT].tools
    assert tools["jira.search"] == 2
    assert tools[OTHER_TOOLS] == 2 + (2 * MAX_TOOLS_PER_AGENT - (MAX_TOOLS_PER_AGENT - 1))
    assert len(tools) == MAX_TOOLS_PER_AGENT + 1
