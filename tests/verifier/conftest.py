"""A real service for the verifier tests: a dedicated redis-server (the tests stop and restart it) and a
gunicorn instance on it, once per module; helpers to mint and revoke through the HTTP API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ADMIN_KEY, RedisServer
from tests.e2e.servers import Instance

ISSUER = "http://localhost:8000"
AUDIENCE = "persona-api"


class Service:
    """The instance, its Redis, and the steps the tests repeat."""

    def __init__(self, instance: Instance, redis_server: RedisServer):
        self.instance = instance
        self.redis = redis_server
        self._secret: str | None = None

    def start_redis(self) -> None:
        """Start the (stopped) Redis again: empty, so the secret key is created anew."""
        self.redis.start()
        self._secret = None

    @property
    def jwks_url(self) -> str:
        return self.instance.base + "/.well-known/jwks.json"

    def secret(self) -> str:
        """A secret key granted introspect (created once; re-created after a Redis restart lost it)."""
        if self._secret is None:
            status, _, body = self.instance.request("POST", "/v1/admin/api-keys", {
                "type": "secret", "name": "verifier tests", "personas": ["*"], "scopes": ["chat:read", "chat:write"],
                "permissions": ["introspect"],
            }, token=ADMIN_KEY)
            assert status == 201, body
            self._secret = str(body["key"])
        return self._secret

    def mint(self, sub: str = "user-1", persona: str = "support-bot", scopes: list[str] | None = None) -> str:
        body: dict[str, Any] = {"personaId": persona, "sub": sub}
        if scopes is not None:
            body["scopes"] = scopes
        status, _, answer = self.instance.request("POST", "/v1/tokens", body, token=self.secret())
        assert status == 200, answer
        return str(answer["token"])

    def revoke(self, **body: str) -> dict[str, Any]:
        status, _, answer = self.instance.request("POST", "/v1/admin/revocations", body, token=ADMIN_KEY)
        assert status == 201, answer
        return dict(answer)

    def lift(self, revocation_id: str) -> None:
        status, _, answer = self.instance.request("DELETE", f"/v1/admin/revocations/{revocation_id}", token=ADMIN_KEY)
        assert status == 204, answer


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, signing_key_file: str) -> Iterator[Service]:
    server = RedisServer(Path(tmp_path_factory.mktemp("verifier-redis")))
    server.start()
    instance = Instance({
        "TOKEN_SERVICE_REDIS_URL": server.url,
        "TOKEN_SERVICE_SIGNING_KEY_FILE": signing_key_file,
        "TOKEN_SERVICE_ADMIN_KEY": ADMIN_KEY,
        "TOKEN_SERVICE_LOG_LEVEL": "WARNING",
        "TOKEN_SERVICE_REDIS_CONNECT_TIMEOUT": "0.5",
        "TOKEN_SERVICE_REDIS_SOCKET_TIMEOUT": "0.5",
    })
    try:
        instance.start()
        yield Service(instance, server)
    finally:
        instance.close()
        server.stop()


@pytest.fixture
def live(service: Service) -> Service:
    """The service with its Redis running (a test that stopped it restarts it)."""
    if service.redis.process is None:
        service.start_redis()
    return service
