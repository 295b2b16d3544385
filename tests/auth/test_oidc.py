"""The ``oidc`` adapter against a real identity provider on loopback (http.server in a thread).

The provider serves ``/jwks.json`` with its own RSA and EC keys, counts the requests it receives, can
rotate keys mid-test and can answer 500 or go down. Time is driven by the FakeClock: nothing sleeps.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tests.conftest import FakeClock, assert_error, bearer, token_parts, with_settings
from token_service import ConfigError, Settings, create_app, load_settings
from token_service.auth.base import pseudonymous_subject
from token_service.config import Grant

AUDIENCE = "chat-frontend"
PEPPER = b"a-pepper-of-at-least-32-random-characters!"
OTHER_PEPPER = b"another-pepper-of-at-least-32-random-chars"
SKEW = 30
REFRESH = 60.0
CACHE = 300


# -- the identity provider ----------------------------------------------------------------------------


@cache
def private_key(kind: str, index: int, pool: str) -> Any:
    """A private key of the test session (generated once: RSA generation is slow); pools never share keys."""
    if kind == "RSA":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


class IdentityProvider:
    """An identity provider on a loopback port: publishes a JWKS, signs tokens, counts requests."""

    def __init__(self, pool: str = "idp") -> None:
        self.pool = pool
        self.keys: dict[str, tuple[str, Any]] = {}  # kid -> (alg, private key)
        self.published: list[str] = []
        self.undeclared: set[str] = set()  # kids published without an alg member
        self.status = 200
        self.requests: Counter[str] = Counter()
        # When set, GET /token answers {"id_token": <a token for login_sub>} with CORS for this origin:
        # a stand-in for a browser login (tests/e2e/test_browser.py).
        self.login_origin: str | None = None
        self.login_sub = "user-1"
        self._lock = threading.Lock()
        self._next = 0
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                with provider._lock:
                    provider.requests[self.path] += 1
                    status, body = provider.status, json.dumps(provider.jwks()).encode()
                    origin = provider.login_origin
                if self.path == "/token" and origin is not None:
                    body = json.dumps({"id_token": provider.token(time.time(), sub=provider.login_sub)}).encode()
                elif self.path != "/jwks.json":
                    status, body = 404, b"{}"
                if status != 200:
                    body = b'{"error": "server_error"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                if self.path == "/token" and origin is not None:
                    self.send_header("Access-Control-Allow-Origin", origin)
                    self.send_header("Cache-Control", "no-store")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        # A short poll interval: shutdown() waits for the serving loop to look up.
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self.thread.start()
        self.running = True

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}/realms/test"

    @property
    def jwks_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/jwks.json"

    def count(self) -> int:
        """How many times the JWKS was requested."""
        with self._lock:
            return self.requests["/jwks.json"]

    def total(self) -> int:
        """How many requests of any path this server received."""
        with self._lock:
            return sum(self.requests.values())

    def add_key(self, alg: str = "RS256", publish: bool = True, declare_alg: bool = True) -> str:
        """A new key (its kid); published in the JWKS unless told otherwise."""
        with self._lock:
            self._next += 1
            kid = f"{alg.lower()}-{self._next}"
            kind = "RSA" if alg[:2] in ("RS", "PS") else "EC"
            self.keys[kid] = (alg, private_key(kind, self._next, self.pool))
            if publish:
                self.published.append(kid)
            if not declare_alg:
                self.undeclared.add(kid)
        return kid

    def rotate(self, alg: str = "RS256") -> str:
        """Switch to a new key: it alone is published from now on."""
        kid = self.add_key(alg, publish=False)
        with self._lock:
            self.published = [kid]
        return kid

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid in self.published:
            alg, key = self.keys[kid]
            algorithm = RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else ECAlgorithm
            jwk = dict(algorithm.to_jwk(key.public_key(), as_dict=True))
            jwk.update({"kid": kid, "use": "sig"})
            if kid not in self.undeclared:
                jwk["alg"] = alg
            keys.append(jwk)
        return {"keys": keys}

    def claims(self, now: float, **changes: Any) -> dict[str, Any]:
        claims: dict[str, Any] = {"iss": self.issuer, "aud": AUDIENCE, "sub": "user-1", "iat": int(now), "exp": int(now) + 300}
        claims.update(changes)
        return {name: value for name, value in claims.items() if value is not None}

    def token(self, now: float, kid: str | None = None, alg: str | None = None, headers: dict[str, Any] | None = None,
              **claims: Any) -> str:
        """A token signed by this provider with ``kid`` (default: the first key); ``None`` claims are left out."""
        kid = kid or self.published[0]
        key_alg, key = self.keys[kid]
        return jwt.encode(self.claims(now, **claims), key, algorithm=alg or key_alg, headers={"kid": kid, "typ": "JWT", **(headers or {})})

    def stop(self) -> None:
        if self.running:
            self.server.shutdown()
            self.server.server_close()
            self.thread.join()
            self.running = False


@pytest.fixture
def idp() -> Iterator[IdentityProvider]:
    provider = IdentityProvider()
    provider.add_key("RS256")
    provider.add_key("ES256")
    yield provider
    provider.stop()


@pytest.fixture
def attacker() -> Iterator[IdentityProvider]:
    """A second server, on another port, that a token might point at; it must never be asked anything."""
    provider = IdentityProvider(pool="attacker")
    provider.add_key("RS256")
    yield provider
    provider.stop()


def oidc_settings(settings: Settings, idp: IdentityProvider, **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "auth_adapters": ("api_key", "oidc"), "oidc_issuer": idp.issuer, "oidc_audience": AUDIENCE,
        "oidc_jwks_url": idp.jwks_url, "oidc_personas": ("support-bot",), "clock_skew": SKEW,
        "oidc_jwks_refresh_interval": REFRESH, "oidc_jwks_cache_seconds": CACHE,
    }
    values.update(changes)
    return with_settings(settings, **values)


@pytest.fixture
def app(settings: Settings, idp: IdentityProvider, clock: FakeClock) -> Any:
    """The conftest's ``client`` and ``actions`` use this app: api_key then oidc, on both backends."""
    return create_app(oidc_settings(settings, idp), clock=clock)


def mint(client: Any, token: str, **body: Any) -> Any:
    body.setdefault("personaId", "support-bot")
    return client.post("/v1/tokens", json=body, headers=bearer(token))


def minted(client: Any, token: str, **body: Any) -> dict[str, Any]:
    response = mint(client, token, **body)
    assert response.status_code == 200, response.get_json()
    return dict(response.get_json())


def refused(response: Any, token: str | None = None) -> dict[str, Any]:
    """401 unauthorized for a bad identity token: nothing minted, the token not echoed."""
    body = assert_error(response, 401, "unauthorized")
    assert "token" not in body
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    if token is not None:
        assert token not in response.get_data(as_text=True)
        assert token not in response.headers["WWW-Authenticate"]
    return body


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def compact(header: dict[str, Any] | str, claims: dict[str, Any], signature: bytes = b"") -> str:
    """A JWS built by hand (for what PyJWT refuses to produce)."""
    header_text = header if isinstance(header, str) else json.dumps(header)
    return f"{b64(header_text.encode())}.{b64(json.dumps(claims).encode())}.{b64(signature)}"


# -- a good identity token ----------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_a_good_identity_token_mints_a_chat_token(client, actions, idp, clock, alg):
    kid = next(k for k in idp.published if idp.keys[k][0] == alg)
    body = minted(client, idp.token(clock(), kid=kid, sub="user-1"))
    header, claims = token_parts(body["token"])
    assert claims["sub"] == "user-1"
    assert claims["client_id"] == "oidc"
    assert claims["personaId"] == "support-bot"
    assert claims["scope"] == "chat:read chat:write"
    assert header["typ"] == "at+jwt"
    assert actions.verify(body["token"]).status_code == 200
    assert idp.count() == 1


def test_the_jwks_is_fetched_once_for_many_tokens(client, idp, clock):
    for user in ("a", "b", "c"):
        minted(client, idp.token(clock(), sub=user))
    minted(client, idp.token(clock(), kid=idp.published[1]))
    assert idp.count() == 1


def test_sub_in_the_body_is_refused(client, idp, clock):
    assert_error(mint(client, idp.token(clock()), sub="someone-else"), 400, "invalid_request")


def test_a_persona_not_granted_is_403(client, idp, clock):
    assert_error(mint(client, idp.token(clock()), personaId="billing-bot"), 403, "access_denied")


def test_a_scope_not_granted_is_403(settings, idp, clock):
    client = create_app(oidc_settings(settings, idp, scopes=("chat:read", "chat:write", "chat:history")), clock=clock).test_client()
    assert_error(mint(client, idp.token(clock()), scopes=["chat:history"]), 403, "access_denied")
    assert minted(client, idp.token(clock()), scopes=["chat:read"])["scope"] == "chat:read"


def test_oidc_scopes_replace_the_default_scopes(settings, idp, clock):
    client = create_app(oidc_settings(settings, idp, oidc_scopes=("chat:read",)), clock=clock).test_client()
    assert_error(mint(client, idp.token(clock()), scopes=["chat:write"]), 403, "access_denied")
    assert minted(client, idp.token(clock()), scopes=["chat:read"])["scope"] == "chat:read"


def test_a_numeric_subject_becomes_a_string(client, idp, clock):
    body = minted(client, idp.token(clock(), sub=12345))
    assert token_parts(body["token"])[1]["sub"] == "12345"


def test_the_configured_client_id_goes_into_the_token(settings, idp, clock):
    client = create_app(oidc_settings(settings, idp, oidc_client_id="keycloak"), clock=clock).test_client()
    assert token_parts(minted(client, idp.token(clock()))["token"])[1]["client_id"] == "keycloak"


def test_api_keys_still_work_and_never_reach_the_provider(actions, idp):
    key = actions.create_key("secret")
    actions.mint(key["key"])
    assert idp.total() == 0


def test_a_token_within_the_clock_skew_is_accepted(client, idp, clock):
    minted(client, idp.token(clock(), exp=int(clock()) - SKEW + 2))
    minted(client, idp.token(clock(), nbf=int(clock()) + SKEW - 2, iat=int(clock()) + SKEW - 2))


def test_an_audience_list_containing_ours_is_accepted(client, idp, clock):
    minted(client, idp.token(clock(), aud=["https://tenant.example/userinfo", AUDIENCE]))


# -- groups ---------------------------------------------------------------------------------------------


@pytest.fixture
def groups_client(settings: Settings, idp: IdentityProvider, clock: FakeClock) -> Any:
    changed = oidc_settings(
        settings, idp, scopes=("chat:read", "chat:write", "chat:history"), oidc_groups_claim="groups",
        oidc_group_grants=(Grant("billing", ("billing-bot",), ("chat:history",)), Grant("/staff", ("staff-bot",), ())),
    )
    return create_app(changed, clock=clock).test_client()


@pytest.mark.parametrize("groups", [["staff", "billing"], "staff billing"])
def test_a_group_grants_its_personas_and_scopes(groups_client, idp, clock, groups):
    token = idp.token(clock(), groups=groups)
    body = minted(groups_client, token, personaId="billing-bot", scopes=["chat:history", "chat:read"])
    assert body["scope"] == "chat:history chat:read"
    minted(groups_client, token, personaId="support-bot", scopes=["chat:history"])  # scopes are the union
    assert_error(mint(groups_client, token, personaId="staff-bot"), 403, "access_denied")  # "staff" is not "/staff"


def test_keycloak_style_group_paths(groups_client, idp, clock):
    minted(groups_client, idp.token(clock(), groups=["/staff"]), personaId="staff-bot")


@pytest.mark.parametrize("groups", [None, [], "", ["billing-team"], {"billing": True}, 7, [["billing"]]])
def test_without_the_group_nothing_more_is_granted(groups_client, idp, clock, groups):
    token = idp.token(clock(), groups=groups)
    assert_error(mint(groups_client, token, personaId="billing-bot"), 403, "access_denied")
    assert_error(mint(groups_client, token, scopes=["chat:history"]), 403, "access_denied")
    minted(groups_client, token)  # the configured personas and scopes still hold


# -- pseudonymous subjects ------------------------------------------------------------------------------


def test_a_pepper_keeps_the_email_out_of_the_token(settings, idp, clock):
    client = create_app(oidc_settings(settings, idp, subject_pepper=PEPPER), clock=clock).test_client()
    email = "alice@example.com"
    first = client.post("/v1/tokens", json={"personaId": "support-bot"}, headers=bearer(idp.token(clock(), sub=email)))
    assert first.status_code == 200
    assert email not in first.get_data(as_text=True)
    header, claims = token_parts(first.get_json()["token"])
    assert email not in json.dumps(header) + json.dumps(claims)
    assert claims["sub"] == pseudonymous_subject(PEPPER, idp.issuer, email)
    assert claims["sub"].startswith("u_")
    again = token_parts(minted(client, idp.token(clock(), sub=email))["token"])[1]
    assert again["sub"] == claims["sub"]  # the same user, the same subject
    other_user = token_parts(minted(client, idp.token(clock(), sub="bob@example.com"))["token"])[1]
    assert other_user["sub"] != claims["sub"]
    other_pepper = create_app(oidc_settings(settings, idp, subject_pepper=OTHER_PEPPER), clock=clock).test_client()
    assert token_parts(minted(other_pepper, idp.token(clock(), sub=email))["token"])[1]["sub"] != claims["sub"]


def test_another_subject_claim_with_a_pepper(settings, idp, clock):
    client = create_app(oidc_settings(settings, idp, subject_pepper=PEPPER, oidc_subject_claim="email"), clock=clock).test_client()
    claims = token_parts(minted(client, idp.token(clock(), sub="ignored", email="Zoë Smith <zoe@example.com>",
                                                  email_verified=True))["token"])[1]
    assert claims["sub"] == pseudonymous_subject(PEPPER, idp.issuer, "Zoë Smith <zoe@example.com>")


@pytest.mark.parametrize("verified", [None, False, "true", 1])
def test_an_email_subject_must_be_verified(settings, idp, clock, verified):
    """Anyone can sign up with someone else's address at many providers: only a verified e-mail may be a subject."""
    client = create_app(oidc_settings(settings, idp, subject_pepper=PEPPER, oidc_subject_claim="email"), clock=clock).test_client()
    extra = {} if verified is None else {"email_verified": verified}
    token = idp.token(clock(), sub="ignored", email="victim@example.com", **extra)
    body = refused(mint(client, token), token)
    assert "not verified" in body["error_description"]


def test_a_huge_exp_is_refused_not_a_500(client, idp, clock):
    refused(mint(client, idp.token(clock(), exp=10**400)))


def test_a_subject_that_cannot_be_a_sub_needs_a_pepper(client, idp, clock):
    token = idp.token(clock(), sub="Zoë Smith")
    body = refused(mint(client, token), token)
    assert "SUBJECT_PEPPER" in body["error_description"]


@pytest.mark.parametrize("sub", [None, "", True, 1.5, ["user-1"], {"id": 1}])
def test_a_missing_or_odd_subject_is_refused(client, idp, clock, sub):
    refused(mint(client, idp.token(clock(), sub=sub)))


# -- key rotation and the refresh limit -------------------------------------------------------------------


def test_a_rotated_key_is_accepted_after_one_refetch(client, idp, clock):
    old = idp.published[0]
    minted(client, idp.token(clock(), kid=old))
    assert idp.count() == 1
    new = idp.rotate("RS256")
    minted(client, idp.token(clock(), kid=new))
    assert idp.count() == 2
    minted(client, idp.token(clock(), kid=new))
    assert idp.count() == 2
    # The provider no longer publishes the old key: the refetched set replaced the cached one.
    refused(mint(client, idp.token(clock(), kid=old)))
    assert idp.count() == 2


def test_unknown_kids_cause_at_most_one_refetch_per_interval(client, idp, clock):
    minted(client, idp.token(clock()))
    assert idp.count() == 1
    stranger = idp.add_key("RS256", publish=False)
    for _ in range(5):
        refused(mint(client, idp.token(clock(), kid=stranger)))
    assert idp.count() == 2
    minted(client, idp.token(clock()))  # known keys keep working meanwhile
    clock.advance(REFRESH - 1)
    refused(mint(client, idp.token(clock(), kid=stranger)))
    assert idp.count() == 2
    clock.advance(1)
    for _ in range(3):
        refused(mint(client, idp.token(clock(), kid=stranger)))
    assert idp.count() == 3


def test_a_key_published_between_refreshes_waits_for_the_interval(client, idp, clock):
    minted(client, idp.token(clock()))
    stranger = idp.add_key("RS256", publish=False)
    refused(mint(client, idp.token(clock(), kid=stranger)))  # spends this interval's refetch
    late = idp.add_key("RS256")
    refused(mint(client, idp.token(clock(), kid=late)))
    assert idp.count() == 2
    clock.advance(REFRESH)
    minted(client, idp.token(clock(), kid=late))
    assert idp.count() == 3


def test_concurrent_requests_for_a_new_kid_cause_one_refetch(app, idp, clock):
    minted(app.test_client(), idp.token(clock()))
    new = idp.rotate("ES256")
    tokens = [idp.token(clock(), kid=new, sub=f"user-{i}") for i in range(8)]
    barrier = threading.Barrier(len(tokens))
    statuses: list[int] = []

    def call(token: str) -> None:
        client = app.test_client()
        barrier.wait()
        statuses.append(mint(client, token).status_code)

    threads = [threading.Thread(target=call, args=(token,)) for token in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * len(tokens)
    assert idp.count() == 2  # the first thread refetched; the others waited for it and used its result


def test_the_set_is_refetched_when_the_cache_is_old(client, idp, clock):
    minted(client, idp.token(clock()))
    clock.advance(CACHE - 1)
    minted(client, idp.token(clock()))
    assert idp.count() == 1
    clock.advance(1)
    minted(client, idp.token(clock()))
    assert idp.count() == 2


# -- the provider failing -----------------------------------------------------------------------------------


def test_provider_down_with_an_empty_cache_is_503(client, idp, clock):
    token = idp.token(clock())
    idp.stop()
    response = mint(client, token)
    body = assert_error(response, 503, "temporarily_unavailable")
    assert "token" not in body
    assert response.headers["Retry-After"]


def test_provider_answering_500_with_an_empty_cache_is_503_until_it_recovers(client, idp, clock):
    idp.status = 500
    assert_error(mint(client, idp.token(clock())), 503, "temporarily_unavailable")
    assert idp.count() == 1
    idp.status = 200
    assert_error(mint(client, idp.token(clock())), 503, "temporarily_unavailable")  # no retry within the interval
    assert idp.count() == 1
    clock.advance(REFRESH)
    minted(client, idp.token(clock()))
    assert idp.count() == 2


def test_provider_answering_500_with_the_kid_cached_still_accepts(client, idp, clock):
    minted(client, idp.token(clock()))
    idp.status = 500
    clock.advance(CACHE)  # the cache is stale: a refetch is tried, fails, and the cached key is used
    minted(client, idp.token(clock()))
    assert idp.count() == 2
    # A kid that is not cached cannot be checked: 503, never a guess.
    assert_error(mint(client, idp.token(clock(), kid=idp.add_key("RS256", publish=False))), 503, "temporarily_unavailable")


def test_provider_down_with_the_kid_cached_still_accepts(client, idp, clock):
    minted(client, idp.token(clock()))
    token = idp.token(clock() + CACHE + REFRESH)
    idp.stop()
    clock.advance(CACHE + REFRESH)
    minted(client, token)


class FixedAnswer:
    """A server on loopback that answers every request with one status, body and headers."""

    def __init__(self, status: int, body: bytes, headers: dict[str, str] | None = None):
        answer = (status, body, headers or {})

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                status, body, headers = answer
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def private_jwk_set() -> bytes:
    jwk = dict(RSAAlgorithm.to_jwk(private_key("RSA", 1, "idp"), as_dict=True))
    jwk.update({"kid": "rs256-1", "alg": "RS256", "use": "sig"})
    return json.dumps({"keys": [jwk]}).encode()


@pytest.mark.parametrize(
    "document",
    [b"not json", b"[]", b'{"keys": []}', b'{"keys": {}}', b'{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "rs256-1"}]}',
     b'{"keys": [{"kty": "RSA", "kid": "rs256-1", "n": 1}]}', b'{"keys": [{"kty": "RSA", "kid": "rs256-1", "alg": "none"}]}',
     private_jwk_set()],
    ids=["not-json", "array", "no-keys", "keys-object", "symmetric", "bad-rsa", "alg-none", "private-key"],
)
def test_a_key_set_without_a_usable_key_is_503(settings, idp, clock, document):
    broken = FixedAnswer(200, document, {"Content-Type": "application/json"})
    try:
        client = create_app(oidc_settings(settings, idp, oidc_jwks_url=broken.url), clock=clock).test_client()
        assert_error(mint(client, idp.token(clock())), 503, "temporarily_unavailable")
    finally:
        broken.stop()


def test_a_redirect_is_not_followed(settings, idp, clock):
    redirect = FixedAnswer(302, b"", {"Location": idp.jwks_url})
    try:
        client = create_app(oidc_settings(settings, idp, oidc_jwks_url=redirect.url), clock=clock).test_client()
        assert_error(mint(client, idp.token(clock())), 503, "temporarily_unavailable")
        assert idp.total() == 0
    finally:
        redirect.stop()


# -- refusals: 401 and nothing minted --------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE", ""])
def test_alg_none_is_refused_in_every_spelling(client, idp, clock, alg):
    token = compact({"alg": alg, "kid": idp.published[0], "typ": "JWT"}, idp.claims(clock()))
    refused(mint(client, token), token)
    assert idp.count() == 0  # refused before any key lookup


def test_alg_none_with_a_real_signature_is_refused(client, idp, clock):
    good = idp.token(clock())
    header = b64(json.dumps({"alg": "none", "kid": idp.published[0]}).encode())
    token = header + good[good.index("."):]
    refused(mint(client, token), token)


@pytest.mark.parametrize("allowed", [("RS256", "ES256"), ("RS256", "HS256")])
def test_hs256_signed_with_the_public_key_pem_is_refused(settings, idp, clock, allowed):
    # ("RS256", "HS256") cannot come from the environment (config refuses HS*); built in code, the key
    # type check still refuses it: an RSA key never verifies an HMAC.
    client = create_app(oidc_settings(settings, idp, oidc_algorithms=allowed), clock=clock).test_client()
    kid = idp.published[0]
    pem = idp.keys[kid][1].public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header, payload = b64(json.dumps({"alg": "HS256", "kid": kid, "typ": "JWT"}).encode()), b64(json.dumps(idp.claims(clock())).encode())
    signature = hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    token = f"{header}.{payload}.{b64(signature)}"
    refused(mint(client, token), token)


def test_an_algorithm_outside_the_allow_list_is_refused(client, idp, clock):
    token = idp.token(clock(), alg="RS512")
    refused(mint(client, token), token)
    assert idp.count() == 0


def test_a_jwk_declaring_another_alg_is_refused(settings, idp, clock):
    client = create_app(oidc_settings(settings, idp, oidc_algorithms=("RS256", "PS256", "ES256")), clock=clock).test_client()
    token = idp.token(clock(), alg="PS256")  # the RSA key's JWK says RS256
    refused(mint(client, token), token)


def test_a_key_type_that_does_not_fit_the_alg_is_refused(settings, idp, clock):
    client = create_app(oidc_settings(settings, idp, oidc_algorithms=("RS256", "PS256", "ES256")), clock=clock).test_client()
    kid = idp.add_key("RS256", declare_alg=False)
    minted(client, idp.token(clock(), kid=kid))  # RS256 with an RSA key that declares no alg
    minted(client, idp.token(clock(), kid=kid, alg="PS256"))  # so is PS256: same key type
    es_token = compact({"alg": "ES256", "kid": kid}, idp.claims(clock()), b"\x01" * 64)
    refused(mint(client, es_token), es_token)


@pytest.mark.parametrize(
    "claims",
    [
        {"iss": "https://evil.example/realms/test"},
        {"iss": None},
        {"aud": "another-app"},
        {"aud": ["another-app", "and-another"]},
        {"aud": None},
        {"exp": None},
        {"exp": "9999999999"},
    ],
    ids=["wrong-iss", "no-iss", "wrong-aud", "wrong-aud-list", "no-aud", "no-exp", "exp-as-text"],
)
def test_wrong_or_missing_claims_are_refused(client, idp, clock, claims):
    token = idp.token(clock(), **claims)
    refused(mint(client, token), token)


def test_an_issuer_differing_by_a_trailing_slash_is_refused(client, idp, clock):
    refused(mint(client, idp.token(clock(), iss=idp.issuer + "/")))


def test_an_expired_token_is_refused(client, idp, clock):
    refused(mint(client, idp.token(clock(), iat=int(clock()) - 600, exp=int(clock()) - SKEW - 1)))


def test_a_token_expires_by_the_injected_clock(client, idp, clock):
    token = idp.token(clock(), exp=int(clock()) + 60)
    minted(client, token)
    clock.advance(60 + SKEW)
    refused(mint(client, token), token)


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_a_token_from_the_future_is_refused(client, idp, clock, claim):
    token = idp.token(clock(), **{claim: int(clock()) + SKEW + 10})
    refused(mint(client, token), token)
    clock.advance(20)
    minted(client, token)


def test_a_token_signed_by_an_unknown_key_is_refused(client, idp, clock):
    stranger = idp.add_key("RS256", publish=False)
    refused(mint(client, idp.token(clock(), kid=stranger)))
    assert idp.count() == 1  # one fetch: the set does not have it


def test_a_token_signed_by_another_key_under_a_published_kid_is_refused(client, idp, clock, attacker):
    kid = idp.published[0]
    forged = jwt.encode(idp.claims(clock()), attacker.keys[attacker.published[0]][1], algorithm="RS256", headers={"kid": kid})
    body = refused(mint(client, forged), forged)
    assert "signature" in body["error_description"]


def test_an_rsa_key_under_2048_bits_is_refused(client, idp, clock):
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    kid = "weak-rsa"
    idp.keys[kid] = ("RS256", weak)
    idp.published.append(kid)
    header, payload = b64(json.dumps({"alg": "RS256", "kid": kid}).encode()), b64(json.dumps(idp.claims(clock())).encode())
    signature = weak.sign(f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
    token = f"{header}.{payload}.{b64(signature)}"
    refused(mint(client, token), token)


@pytest.mark.parametrize("member", ["jku", "x5u"])
def test_a_key_url_in_the_header_is_refused_and_never_fetched(client, idp, clock, attacker, member):
    kid = attacker.published[0]
    token = attacker.token(clock(), kid=kid, headers={member: attacker.jwks_url}, iss=idp.issuer)
    refused(mint(client, token), token)
    # Also with a kid the real provider publishes (the attacker hoping the URL would be preferred).
    token = jwt.encode(idp.claims(clock()), attacker.keys[kid][1], algorithm="RS256",
                       headers={"kid": idp.published[0], member: attacker.jwks_url})
    refused(mint(client, token), token)
    assert attacker.total() == 0
    assert idp.count() == 0


def test_an_embedded_jwk_is_refused(client, idp, clock, attacker):
    kid = attacker.published[0]
    embedded = attacker.jwks()["keys"][0]
    token = attacker.token(clock(), kid=kid, headers={"jwk": embedded}, iss=idp.issuer)
    refused(mint(client, token), token)
    assert idp.count() == 0


@pytest.mark.parametrize("member", [{"x5c": ["MIIBIjANBgkqhkiG9w0BAQEFAAOC"]}, {"crit": ["exp"]}, {"crit": ["b64"], "b64": True}])
def test_x5c_and_crit_are_refused(client, idp, clock, member):
    token = idp.token(clock(), headers=member)
    refused(mint(client, token), token)
    assert idp.count() == 0


@pytest.mark.parametrize("kid", [None, "", 7, ["rs256-1"]])
def test_a_missing_or_odd_kid_is_refused(client, idp, clock, kid):
    header: dict[str, Any] = {"alg": "RS256", "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    token = compact(header, idp.claims(clock()), b"\x01" * 256)
    refused(mint(client, token), token)
    assert idp.count() == 0


def test_duplicate_header_members_are_refused(client, idp, clock):
    kid = idp.published[0]
    header = f'{{"alg": "none", "kid": "{kid}", "alg": "RS256"}}'
    good = idp.token(clock())
    token = b64(header.encode()) + good[good.index("."):]
    refused(mint(client, token), token)


@pytest.mark.parametrize(
    "token",
    [
        "a.b.c",
        "..",
        "eyJhbGciOiJSUzI1NiJ9..",
        b64(b"[1, 2]") + ".e30.",
        b64(b"not json") + ".e30.",
        b64(b'{"alg": "RS256", "kid": "rs256-1"}') + "=.e30.",
    ],
)
def test_a_malformed_jwt_is_refused(client, idp, token):
    refused(mint(client, token))
    assert idp.count() == 0


def test_a_garbled_payload_or_signature_is_refused(client, idp, clock):
    good = idp.token(clock())
    header, payload, signature = good.split(".")
    for token in (f"{header}.{payload}.{signature[:-4]}", f"{header}.!!!.{signature}", f"{header}.{b64(b'[]')}.{signature}"):
        refused(mint(client, token), token)


def test_a_token_over_8192_characters_is_refused(client, idp, clock):
    token = idp.token(clock(), padding="x" * 8192)
    assert len(token) > 8192
    refused(mint(client, token))
    assert idp.count() == 0


@pytest.mark.parametrize("credentials", ["abc", "a.b", "a.b.c.d", "sk_not_a_key"])
def test_credentials_without_exactly_two_dots_are_not_for_this_adapter(client, idp, credentials):
    response = mint(client, credentials)
    assert_error(response, 401, "unauthorized")
    if not credentials.startswith("sk_"):  # an sk_ value is api_key's to refuse
        assert "error=" not in response.headers["WWW-Authenticate"]  # no adapter recognised a credential
    assert idp.total() == 0


def test_failures_mint_nothing_and_leave_good_tokens_working(client, actions, idp, clock):
    stranger = idp.add_key("RS256", publish=False)
    for token in (idp.token(clock(), aud="x"), idp.token(clock(), kid=stranger), idp.token(clock(), exp=int(clock()) - 100)):
        refused(mint(client, token), token)
    token = minted(client, idp.token(clock()))["token"]
    assert actions.verify(token).status_code == 200


# -- start-up -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["oidc_issuer", "oidc_audience", "oidc_jwks_url"])
def test_oidc_without_its_settings_stops_start_up_with_one_line(missing):
    values = {"oidc_issuer": "https://idp.example/realms/x", "oidc_audience": AUDIENCE, "oidc_jwks_url": "https://idp.example/jwks"}
    values[missing] = None  # type: ignore[assignment]
    with pytest.raises(ConfigError) as built:
        create_app(Settings(auth_adapters=("api_key", "oidc"), log_level="WARNING", **values))
    assert f"TOKEN_SERVICE_{missing.upper()}" in str(built.value)
    assert "\n" not in str(built.value)
    environ = {"TOKEN_SERVICE_AUTH_ADAPTERS": "api_key,oidc"}
    environ.update({f"TOKEN_SERVICE_{name.upper()}": value for name, value in values.items() if value is not None})
    with pytest.raises(ConfigError) as loaded:
        load_settings(environ)
    assert f"TOKEN_SERVICE_{missing.upper()}" in str(loaded.value)
    assert "\n" not in str(loaded.value)


def test_oidc_settings_load_from_the_environment():
    settings = load_settings({
        "TOKEN_SERVICE_AUTH_ADAPTERS": "api_key,oidc", "TOKEN_SERVICE_OIDC_ISSUER": "https://idp.example/realms/x",
        "TOKEN_SERVICE_OIDC_AUDIENCE": AUDIENCE, "TOKEN_SERVICE_OIDC_JWKS_URL": "https://idp.example/jwks",
        "TOKEN_SERVICE_OIDC_GROUP_GRANTS": '{"billing": {"personas": ["billing-bot"], "scopes": ["chat:read"]}}',
    })
    assert settings.oidc_group_grants == (Grant("billing", ("billing-bot",), ("chat:read",)),)
    create_app(with_settings(settings, log_level="WARNING"))  # builds without contacting the provider


def test_the_app_starts_without_contacting_the_provider(settings, idp, clock):
    create_app(oidc_settings(settings, idp), clock=clock)
    assert idp.total() == 0

