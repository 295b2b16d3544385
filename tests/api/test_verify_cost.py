"""Checking a token costs one Redis round trip, whatever the number of revocations in force."""

from __future__ import annotations

from collections import Counter

import redis

from tests.conftest import ADMIN_KEY, Actions, FakeClock
from token_service import Settings, create_app


def command_calls(client: redis.Redis) -> Counter[str]:
    """Calls per command since the server started (``INFO commandstats``); commands a script runs count too."""
    return Counter({name.removeprefix("cmdstat_"): int(stats["calls"]) for name, stats in client.info("commandstats").items()})


def assert_one_round_trip_each(probe: redis.Redis, before: Counter[str], verifies: int) -> None:
    """Each verify sent Redis one command (the check script, EVALSHA), which read the markers with one MGET and the
    jti's bucket with one HGET, and nothing else was sent (but this probe's own INFO)."""
    delta = command_calls(probe) - before
    delta["info"] -= 1
    assert +delta == Counter({"evalsha": verifies, "mget": verifies, "hget": verifies})


def test_verify_is_one_redis_command_with_thousands_of_revocations(redis_url: str, signing_key_file: str) -> None:
    app = create_app(Settings(redis_url=redis_url, admin_key=ADMIN_KEY, signing_key_file=signing_key_file, log_level="WARNING",
                              rate_limit_admin="100000/minute"),  # thousands of admin revocations
                     clock=FakeClock())
    actions = Actions(app.test_client())
    key = actions.create_key("secret")["key"]
    token = actions.token(key)
    for i in range(2000):
        assert actions.revoke(jti=f"other-{i}").status_code == 201
    for i in range(200):
        assert actions.revoke(sub=f"someone-{i}").status_code == 201
    assert actions.verify(token).status_code == 200  # the first call of a process loads the check script (SCRIPT LOAD)
    probe = redis.Redis.from_url(redis_url)
    before = command_calls(probe)
    for _ in range(50):
        assert actions.verify(token).status_code == 200
    assert_one_round_trip_each(probe, before, 50)
    probe.close()
