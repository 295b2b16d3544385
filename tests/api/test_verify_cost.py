"""Checking a token costs one Redis round trip, whatever the number of revocations in force."""

from __future__ import annotations

import redis

from tests.conftest import ADMIN_KEY, Actions, FakeClock
from token_service import Settings, create_app


def _commands(client: redis.Redis) -> int:
    return int(client.info("stats")["total_commands_processed"])


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
    probe = redis.Redis.from_url(redis_url)
    before = _commands(probe)
    for _ in range(50):
        assert actions.verify(token).status_code == 200
    # every verify is one MGET; the probe's own INFO call counts once
    assert _commands(probe) - before == 50 + 1
    probe.close()
