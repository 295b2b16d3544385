"""Secrets stay secret: a full session (every kind of API key, minting with public and secret keys and
signed requests, verification, introspection, revocations, rotations, exposed-key reports, a secret key
from a browser, bad credentials and tokens of each kind, bodies smuggling secrets in unknown fields, a
plugin that crashes quoting a credential, and the operator CLI) is run at the most verbose log level,
once through the Flask test client with every logger captured, once against real gunicorn instances
on a real Redis with their stdout and stderr kept. Then none of the secrets it used may appear in any
log line, response body or header: API key texts and their secret parts, tokens and their signatures,
the bootstrap admin key, the key-encryption key (as given, hex, base64), the signing key's passphrase
and PEM lines, HMAC signatures. The only places a secret may appear are the ones whose purpose is to
hand it over once: the ``key`` of a created or rotated API key and the ``token`` of a mint answer (those
two fields alone are left out of what is searched, not the bodies around them). No error body holds
a traceback, and an unexpected exception is answered with API.md's ``server_error``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from tests.conftest import ADMIN_KEY, ORIGIN, RedisServer
from tests.e2e.servers import ROOT, Instance
from tests.security.exploding_adapter import EXPLODE_HEADER
from token_service import Settings, create_app
from token_service.apikeys import _checksum, generate_key_text, new_key_id
from token_service.keys import SigningKey

PASSPHRASE = "correct horse battery staple 7f3a9c"
EXPLODING = "tests.security.exploding_adapter:ExplodingAdapter"
ADAPTERS = (EXPLODING, "api_key", "hmac")
GENEROUS = "100000/minute"  # the failed-authentication throttle would otherwise stop the bad-credential steps
PERSONA = "support-bot"


@dataclass
class Exchange:
    """One answer: status, headers, raw body, and the JSON body when it is JSON."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


Send = Callable[[str, str, bytes | None, dict[str, str]], Exchange]


@dataclass
class Secrets:
    """The key material of one deployment, in every form a leak could take."""

    kek: bytes
    kek_text: str
    pem_path: Path
    pem_plain: bytes
    pem_encrypted: bytes
    private_d: str

    @classmethod
    def make(cls, directory: Path) -> Secrets:
        kek = secrets.token_bytes(32)
        key = SigningKey.generate("ES256")
        encrypted = key.private_pem(PASSPHRASE)
        path = directory / "signing.pem"
        path.write_bytes(encrypted)
        private = serialization.load_pem_private_key(key.private_pem(), password=None)
        d = private.private_numbers().private_value.to_bytes(32, "big")  # type: ignore[union-attr]
        return cls(kek, base64.b64encode(kek).decode(), path, key.private_pem(), encrypted,
                   base64.urlsafe_b64encode(d).rstrip(b"=").decode())

    def needles(self) -> dict[str, str]:
        found = {
            "admin bootstrap key": ADMIN_KEY,
            "passphrase": PASSPHRASE,
            "KEK as given (base64)": self.kek_text,
            "KEK hex": self.kek.hex(),
            "KEK base64url": base64.urlsafe_b64encode(self.kek).rstrip(b"=").decode(),
            "KEK base64 unpadded": self.kek_text.rstrip("="),
            "private scalar (JWK d)": self.private_d,
        }
        for label, pem in (("encrypted PEM", self.pem_encrypted), ("plain PEM", self.pem_plain)):
            for number, line in enumerate(pem.decode().splitlines()):
                if len(line) >= 16 and not line.startswith("-----"):  # a short last line would match by chance
                    found[f"{label} line {number}"] = line
        return found


def _drop_shown_once(body: bytes, fields: tuple[str, ...]) -> str:
    """The body as text, without the top-level fields whose purpose is to hand a secret over once."""
    if not fields:
        return body.decode(errors="replace")
    data = json.loads(body)
    for name in fields:
        assert name in data, (name, data)  # the field exists and is dropped: nothing else is
        del data[name]
    return json.dumps(data)


@dataclass
class Session:
    """A realistic session through one transport: records every answer and every secret it used."""

    send: Send
    needles: dict[str, str] = field(default_factory=dict)
    answers: list[str] = field(default_factory=list)
    error_bodies: list[str] = field(default_factory=list)

    def secret(self, label: str, value: str) -> str:
        self.needles[label] = value
        return value

    def call(self, method: str, path: str, *, json_body: Any = None, raw: bytes | None = None,
             content_type: str | None = None, token: str | None = None, headers: dict[str, str] | None = None,
             shown_once: tuple[str, ...] = (), expect: int | None = None) -> Exchange:
        all_headers = dict(headers or {})
        data = raw
        if json_body is not None:
            data = json.dumps(json_body).encode()
            all_headers.setdefault("Content-Type", "application/json")
        if content_type is not None:
            all_headers["Content-Type"] = content_type
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        answer = self.send(method, path, data, all_headers)
        assert expect is None or answer.status == expect, (method, path, answer.status, answer.body[:300])
        kept = shown_once if answer.status in (200, 201) else ()
        text = _drop_shown_once(answer.body, kept)
        self.answers.append(f"{method} {path.partition('?')[0]} -> {answer.status}\n"  # the label: not the request's query
                            + "\n".join(f"{k}: {v}" for k, v in answer.headers.items()) + "\n" + text)
        if answer.status >= 400:
            self.error_bodies.append(answer.body.decode(errors="replace"))
        return answer

    # -- steps ------------------------------------------------------------------------------------

    def create_key(self, kind: str, label: str, **fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"type": kind, "name": label, **fields}
        if kind != "admin":
            body.setdefault("personas", [PERSONA])
        if kind == "public":
            body.setdefault("origins", [ORIGIN])
        created = self.call("POST", "/v1/admin/api-keys", json_body=body, token=ADMIN_KEY, shown_once=("key",), expect=201).json
        self.key_needles(label, created["key"])
        return dict(created)

    def key_needles(self, label: str, text: str) -> None:
        self.secret(f"{label} key", text)
        self.secret(f"{label} key's secret part", text.split("_")[2][:43])
        self.secret(f"{label} key without its checksum", text[:-6])

    def mint(self, key: str | None, label: str, body: dict[str, Any], headers: dict[str, str] | None = None,
             raw: bytes | None = None) -> str:
        answer = self.call("POST", "/v1/tokens", json_body=None if raw is not None else body, raw=raw,
                           content_type="application/json" if raw is not None else None,
                           token=key, headers=headers, shown_once=("token",), expect=200)
        return self.token_needles(label, answer.json["token"])

    def token_needles(self, label: str, token: str) -> str:
        self.secret(f"{label} token", token)
        self.secret(f"{label} token's signature", token.rsplit(".", 1)[1])
        return token

    def signed_headers(self, key_id: str, key_text: str, body: bytes, label: str, now: int | None = None) -> dict[str, str]:
        timestamp = str(int(time.time()) if now is None else now)
        signature = hmac.new(key_text.encode(), timestamp.encode() + body, hashlib.sha256).hexdigest()
        self.secret(f"{label} HMAC signature", signature)
        return {"X-Key-Id": key_id, "X-Timestamp": timestamp, "X-Signature": signature}


def _flip(text: str) -> str:
    """``text`` with its last character changed (same alphabet)."""
    return text[:-1] + ("A" if text[-1] != "A" else "B")


@pytest.fixture
def redis_password() -> str:
    return "redis-pw-" + secrets.token_urlsafe(24)


@pytest.fixture
def password_redis_url(redis_url: str, redis_server: RedisServer, redis_password: str) -> Iterator[str]:
    """The test Redis reached as an ACL user with a password in the URL (a secret the logs must not show)."""
    user = "token-service-" + secrets.token_hex(4)
    admin = redis_server.client()
    admin.acl_setuser(user, enabled=True, passwords=[f"+{redis_password}"], keys=["*"], channels=["*"], commands=["+@all"])
    try:
        yield redis_url.replace("redis://", f"redis://{user}:{redis_password}@")
    finally:
        admin.acl_deluser(user)
        admin.close()


def run_session(s: Session) -> dict[str, Any]:
    """Every operation of the service, good and bad, through ``s``; what later steps (the CLI) need."""
    # keys of every kind
    admin = s.create_key("admin", "on-call admin")
    public = s.create_key("public", "web chat")
    secret = s.create_key("secret", "backend", permissions=["introspect"])
    signer = s.create_key("secret", "signing backend")
    doomed = s.create_key("secret", "key shown to a browser")
    s.call("GET", "/v1/admin/api-keys", token=admin["key"], expect=200)

    # minting: public key from its origin, secret key, signed request
    public_token = s.mint(public["key"], "public", {"personaId": PERSONA}, headers={"Origin": ORIGIN})
    secret_token = s.mint(secret["key"], "secret", {"personaId": PERSONA, "sub": "user-42"})
    body = json.dumps({"personaId": PERSONA, "sub": "user-43"}, separators=(",", ":")).encode()
    signed_token = s.mint(None, "signed", {}, raw=body, headers=s.signed_headers(signer["id"], signer["key"], body, "good"))

    # verification, introspection, status
    for token in (public_token, secret_token, signed_token):
        s.call("GET", f"/v1/verify?personaId={PERSONA}", token=token, expect=200)
        s.call("POST", "/v1/introspect", json_body={"token": token}, token=secret["key"], expect=200)
        s.call("POST", "/v1/admin/token-status", json_body={"token": token}, token=ADMIN_KEY, expect=200)
    s.call("GET", "/v1/verify?personaId=another-persona", token=secret_token, expect=403)
    s.call("POST", "/v1/introspect", raw=urllib.parse.urlencode({"token": signed_token}).encode(),
           content_type="application/x-www-form-urlencoded", token=admin["key"], expect=200)
    s.call("GET", "/v1/revocations/feed", token=secret["key"], expect=200)
    s.call("GET", "/.well-known/jwks.json", expect=200)
    s.call("GET", "/.well-known/oauth-authorization-server", expect=200)
    s.call("GET", "/readyz", expect=200)

    # self-revocation (form-encoded, as a browser's logout) and admin revocation by token
    s.call("POST", "/v1/revoke", raw=urllib.parse.urlencode({"token": public_token}).encode(),
           content_type="application/x-www-form-urlencoded", expect=200)
    s.call("POST", "/v1/admin/revocations", json_body={"token": secret_token, "reason": "drill"}, token=admin["key"], expect=201)
    for token in (public_token, secret_token):
        s.call("GET", "/v1/verify", token=token, expect=401)
        s.call("POST", "/v1/introspect", json_body={"token": token}, token=secret["key"], expect=200)
        s.call("POST", "/v1/admin/token-status", json_body={"token": token}, token=ADMIN_KEY, expect=200)
    s.call("GET", "/v1/admin/revocations", token=ADMIN_KEY, expect=200)

    # rotations: an API key (its new text is shown once) and the signing key
    rotated = s.call("POST", f"/v1/admin/api-keys/{secret['id']}/rotate", json_body={"grace_seconds": 60},
                     token=ADMIN_KEY, shown_once=("key",), expect=201).json
    s.key_needles("rotated backend", rotated["key"])
    s.mint(rotated["key"], "rotated", {"personaId": PERSONA, "sub": "user-44"})
    s.call("POST", "/v1/admin/signing-keys/rotate", token=ADMIN_KEY, expect=201)
    s.call("GET", "/v1/admin/signing-keys", token=ADMIN_KEY, expect=200)

    # a secret key presented by a browser is refused (and revoked); a leaked key reported by a scanner
    s.call("POST", "/v1/tokens", json_body={"personaId": PERSONA, "sub": "u"}, token=doomed["key"],
           headers={"Origin": ORIGIN}, expect=401)
    s.call("POST", "/v1/tokens", json_body={"personaId": PERSONA, "sub": "u"}, token=doomed["key"], expect=401)
    unknown = s.secret("unknown well-formed key", generate_key_text("secret", new_key_id()))
    s.call("POST", "/v1/keys/exposed", json_body={"keys": [secret["key"], public["key"], unknown]}, expect=200)

    # bad credentials of each kind
    body_text = f"sk_{rotated['id']}_{secrets.token_hex(22)[:43]}"
    # a well-formed text (good checksum) with a real id and a wrong secret: it reaches the store lookup
    right_id_wrong_secret = s.secret("forged secret with a real id", body_text + _checksum(body_text))
    bad_credentials = {
        "wrong key": unknown,
        "truncated key": s.secret("truncated secret key", rotated["key"][:-4]),
        "flipped key": s.secret("flipped secret key", _flip(rotated["key"])),
        "right id wrong secret": right_id_wrong_secret,
        "truncated admin bootstrap key": s.secret("truncated bootstrap key", ADMIN_KEY[:-2]),
        "flipped admin key": s.secret("flipped admin key", _flip(admin["key"])),
        "garbage": s.secret("garbage credential", "not-a-key-" + secrets.token_urlsafe(24)),
    }
    for text in bad_credentials.values():
        s.call("POST", "/v1/tokens", json_body={"personaId": PERSONA, "sub": "u"}, token=text, expect=401)
        s.call("POST", "/v1/introspect", json_body={"token": signed_token}, token=text, expect=401)
        s.call("GET", "/v1/admin/api-keys", token=text, expect=401)
    basic = base64.b64encode(f"{rotated['id']}:{rotated['key']}".encode()).decode()
    s.call("POST", "/v1/tokens", json_body={"personaId": PERSONA, "sub": "u"}, headers={"Authorization": f"Basic {basic}"}, expect=401)
    s.call("GET", f"/v1/verify?access_token={signed_token}", expect=401)  # RFC 6750's query form is not read, nor logged
    s.call("POST", "/v1/tokens", json_body={"personaId": PERSONA}, token=public["key"],
           headers={"Origin": "https://evil.example"}, expect=403)
    s.call("GET", "/v1/admin/api-keys", token=rotated["key"], expect=403)

    # bad signed requests: a signature over another body, by another key, a malformed one, a replay, a stale one
    body = json.dumps({"personaId": PERSONA, "sub": "user-45"}).encode()
    other = json.dumps({"personaId": PERSONA, "sub": "admin"}).encode()
    replayed = json.dumps({"personaId": PERSONA, "sub": "user-46"}).encode()
    good_once = s.signed_headers(signer["id"], signer["key"], replayed, "replayed")
    s.call("POST", "/v1/tokens", raw=replayed, content_type="application/json", headers=good_once, shown_once=("token",), expect=200)
    bad_signed = [
        (body, s.signed_headers(signer["id"], signer["key"], other, "over another body")),
        (body, s.signed_headers(signer["id"], rotated["key"], body, "by another key")),
        (body, s.signed_headers(signer["id"], signer["key"], body, "stale", now=int(time.time()) - 3600)),
        (body, {**s.signed_headers(signer["id"], signer["key"], body, "truncated"),
                "X-Signature": s.needles["truncated HMAC signature"][:-8]}),
        (body, s.signed_headers(public["id"], signer["key"], body, "with a public key's id")),
        (replayed, good_once),
    ]
    for raw, headers in bad_signed:
        s.call("POST", "/v1/tokens", raw=raw, content_type="application/json", headers=headers, expect=401)

    # bad tokens of each kind, on every endpoint that reads one
    header, claims, signature = signed_token.split(".")
    bad_tokens = [
        s.token_needles("tampered", f"{header}.{claims}.{_flip(signature)}"),
        s.secret("truncated token", signed_token[:-10]),
        s.secret("token of another issuer's kind", "eyJhbGciOiJub25lIn0." + claims + "."),
        s.secret("token with extra part", signed_token + "." + signature),
    ]
    for token in bad_tokens:
        s.call("GET", "/v1/verify", token=token, expect=401)
        assert s.call("POST", "/v1/introspect", json_body={"token": token}, token=rotated["key"], expect=200).json == {"active": False}
        s.call("POST", "/v1/introspect", json_body={"token": token}, token=secret["key"], expect=401)  # reported above
        s.call("POST", "/v1/introspect", json_body={"token": token}, token=signer["key"], expect=403)  # no introspect grant
        s.call("POST", "/v1/admin/token-status", json_body={"token": token}, token=ADMIN_KEY, expect=200)
        s.call("POST", "/v1/revoke", json_body={"token": token}, expect=200)

    # bodies smuggling secrets in unknown fields, and malformed bodies holding secrets
    smuggled = s.secret("smuggled password", "hunter2-" + secrets.token_urlsafe(18))
    s.call("POST", "/v1/tokens", json_body={"personaId": PERSONA, "sub": "u", "password": smuggled}, token=rotated["key"], expect=400)
    s.call("POST", "/v1/admin/api-keys", json_body={"type": "secret", "name": "x", "personas": [PERSONA], "key": unknown},
           token=ADMIN_KEY, expect=400)
    s.call("POST", "/v1/introspect", json_body={"token": signed_token, "client_secret": smuggled}, token=admin["key"], expect=400)
    # form parameters the service does not know are ignored (RFC 6749 section 3.1), not echoed
    s.call("POST", "/v1/revoke", raw=urllib.parse.urlencode({"token": bad_tokens[0], "client_secret": smuggled}).encode(),
           content_type="application/x-www-form-urlencoded", expect=200)
    s.call("POST", "/v1/admin/revocations", json_body={"token": signed_token, "sub": smuggled}, token=ADMIN_KEY, expect=400)
    s.call("POST", "/v1/introspect", raw=b'{"token": "' + signed_token.encode() + b'"', content_type="application/json",
           token=admin["key"], expect=400)
    s.call("POST", "/v1/tokens", raw=b'{"personaId": "' + smuggled.encode() + b'", "sub": ', content_type="application/json",
           token=rotated["key"], expect=400)
    s.call("POST", "/v1/keys/exposed", raw=json.dumps({"keys": [unknown], "token": signed_token}).encode(),
           content_type="application/json", expect=400)
    s.call("POST", "/v1/admin/token-status", raw=signed_token.encode(), content_type="text/plain", token=ADMIN_KEY, expect=415)

    # a plugin that crashes quoting the caller's credential and body
    crash = s.call("POST", "/v1/tokens", json_body={"personaId": PERSONA, "sub": smuggled}, token=rotated["key"],
                   headers={EXPLODE_HEADER: "1"}, expect=500)
    assert crash.json["error"] == "server_error" and crash.json["error_description"]
    assert set(crash.json) == {"error", "error_description"}

    # the admin key is revoked last (it was used above)
    s.call("DELETE", f"/v1/admin/api-keys/{admin['id']}", token=ADMIN_KEY, expect=204)
    return {"secret": secret, "rotated": rotated, "signer": signer, "signed_token": signed_token, "unknown": unknown}


def assert_no_leak(haystack: str, needles: dict[str, str]) -> None:
    """None of the needles (nor, for hex ones, their other case) appears in the haystack."""
    lowered = haystack.lower()
    leaks = []
    for label, needle in needles.items():
        assert len(needle) >= 16, (label, needle)  # short needles would match by chance
        if needle in haystack or (all(c in "0123456789abcdef" for c in needle.lower()) and needle.lower() in lowered):
            at = haystack.find(needle) if needle in haystack else lowered.find(needle.lower())
            leaks.append(f"{label}: ...{haystack[max(at - 120, 0):at + 20]!r}...")
    assert not leaks, "secrets leaked:\n" + "\n".join(leaks)


def assert_no_traceback(texts: list[str]) -> None:
    for text in texts:
        assert "Traceback" not in text and 'File "' not in text, text


# -- the Flask test client, every logger captured at DEBUG ----------------------------------------------------------


@pytest.fixture
def captured(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog at DEBUG on the root logger and on ``token_service`` (which does not propagate to the root)."""
    ours = logging.getLogger("token_service")
    caplog.set_level(logging.DEBUG)
    ours.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        ours.removeHandler(caplog.handler)


def test_a_full_session_through_the_app_leaks_no_secret(captured: pytest.LogCaptureFixture, password_redis_url: str,
                                                         redis_password: str, tmp_path: Path) -> None:
    keys = Secrets.make(tmp_path)
    settings = Settings(
        redis_url=password_redis_url, admin_key=ADMIN_KEY, signing_key_file=str(keys.pem_path), signing_key_passphrase=PASSPHRASE,
        key_encryption_key=keys.kek, auth_adapters=ADAPTERS, log_level="DEBUG",
        rate_limit_failed_auth=GENEROUS, rate_limit_admin=GENEROUS,
    )
    client = create_app(settings).test_client()

    def send(method: str, path: str, data: bytes | None, headers: dict[str, str]) -> Exchange:
        response = client.open(path, method=method, data=data, headers=headers)
        return Exchange(response.status_code, dict(response.headers), response.get_data())

    session = Session(send, needles={"Redis password": redis_password})
    run_session(session)

    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    log = "\n".join(formatter.format(record) for record in captured.records)
    assert "token_service.access" in log and "token_service.audit" in log  # the capture sees the service's own lines
    assert "unhandled RuntimeError" in log and "POST /v1/tokens" in log  # the crash is logged, by type and route
    assert "cannot parse" not in log  # ... and not by its text, which quotes the credential
    assert_no_traceback(session.error_bodies + [log])
    assert_no_leak("\n".join(session.answers) + "\n" + log, {**keys.needles(), **session.needles})


# -- real gunicorn instances on a real Redis, and the operator CLI -------------------------------------------------


class VerboseInstance(Instance):
    """An instance at gunicorn's and the service's most verbose log level, stdout kept with stderr."""

    def __init__(self, env: dict[str, str]):
        super().__init__(env, workers=2, keep_stdout=True)
        self.args[-1:-1] = ["--log-level", "debug"]


def _http(base: str) -> Send:
    def send(method: str, path: str, data: bytes | None, headers: dict[str, str]) -> Exchange:
        request = urllib.request.Request(base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback test server
                return Exchange(response.status, dict(response.headers), response.read())
        except urllib.error.HTTPError as err:
            return Exchange(err.code, dict(err.headers), err.read())

    return send


@dataclass
class Cli:
    """``python -m token_service`` with the instances' environment; keeps everything it printed."""

    env: dict[str, str]
    outputs: list[str] = field(default_factory=list)

    def run(self, *args: str, stdin: str = "", shown_once: str | None = None, expect: int = 0) -> str:
        result = subprocess.run([sys.executable, "-m", "token_service", *args], cwd=ROOT, env=self.env, input=stdin,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == expect, (args, result.returncode, result.stdout, result.stderr)
        stdout = result.stdout
        if shown_once is not None:  # the one line (or JSON field) whose purpose is to show a new key once
            if args[-1] == "--json":
                stdout = _drop_shown_once(stdout.encode(), (shown_once,))
            else:
                lines = stdout.splitlines()
                marker = lines.index("Its text follows, shown this once (it cannot be retrieved again):")
                stdout = "\n".join(lines[: marker + 1] + lines[marker + 2:])
        self.outputs.append(f"$ {' '.join(args)}\n{stdout}\n{result.stderr}")
        return result.stdout


def _key_text(stdout: str) -> str:
    if stdout.lstrip().startswith("{"):
        return str(json.loads(stdout)["key"])
    lines = stdout.splitlines()
    return lines[lines.index("Its text follows, shown this once (it cannot be retrieved again):") + 1]


def test_a_full_session_on_gunicorn_and_the_cli_leaks_no_secret(password_redis_url: str, redis_password: str, tmp_path: Path) -> None:
    keys = Secrets.make(tmp_path)
    (tmp_path / "kek").write_text(keys.kek_text + "\n")
    (tmp_path / "passphrase").write_text(PASSPHRASE)
    (tmp_path / "admin-key").write_text(ADMIN_KEY + "\n")
    env = {
        "TOKEN_SERVICE_REDIS_URL": password_redis_url,
        "TOKEN_SERVICE_SIGNING_KEY_FILE": str(keys.pem_path),
        "TOKEN_SERVICE_SIGNING_KEY_PASSPHRASE_FILE": str(tmp_path / "passphrase"),
        "TOKEN_SERVICE_KEY_ENCRYPTION_KEY_FILE": str(tmp_path / "kek"),
        "TOKEN_SERVICE_ADMIN_KEY_FILE": str(tmp_path / "admin-key"),
        "TOKEN_SERVICE_AUTH_ADAPTERS": ",".join(ADAPTERS),
        "TOKEN_SERVICE_LOG_LEVEL": "DEBUG",
        "TOKEN_SERVICE_RATE_LIMIT_FAILED_AUTH": GENEROUS,
        "TOKEN_SERVICE_RATE_LIMIT_ADMIN": GENEROUS,
    }
    a, b = VerboseInstance(env), VerboseInstance(env)
    try:
        a.start()
        b.start()
        session = Session(_http(a.base), needles={"Redis password": redis_password})
        made = run_session(session)
        # the other instance sees the same service: a token minted by one, checked by the other
        session.send = _http(b.base)
        token = session.mint(made["rotated"]["key"], "second instance", {"personaId": PERSONA, "sub": "user-50"})
        session.call("GET", "/v1/verify", token=token, expect=200)

        cli_env = {**a.env}
        cli = Cli(cli_env)
        cli.run("check-config")
        created = _key_text(cli.run("api-keys", "create", "--type", "secret", "--name", "cli backend", "--persona", PERSONA,
                                    "--permission", "introspect", "--json", shown_once="key"))
        session.key_needles("CLI secret", created)
        admin_text = _key_text(cli.run("api-keys", "create", "--type", "admin", "--name", "cli admin", shown_once="key"))
        session.key_needles("CLI admin", admin_text)
        created_id = created.split("_")[1]
        rotated = _key_text(cli.run("api-keys", "rotate", created_id, "--grace-seconds", "0", "--json", shown_once="key"))
        session.key_needles("CLI rotated", rotated)
        cli.run("api-keys", "list")
        cli.run("api-keys", "list", "--json")
        cli_token = session.mint(rotated, "for the CLI", {"personaId": PERSONA, "sub": "user-51"})
        cli.run("token-status", stdin=cli_token + "\n")
        cli.run("token-status", "--json", stdin=cli_token + "\n")
        cli.run("token-status", stdin=cli_token[:-6] + "\n")
        cli.run("revoke", "--token-stdin", "--reason", "cli drill", stdin=cli_token + "\n")
        cli.run("revoke", "--token-stdin", "--json", stdin=made["signed_token"] + "\n")
        cli.run("revocations", "list")
        cli.run("api-keys", "report-exposed", stdin=f"{admin_text}\n{made['unknown']}\n{rotated[:-3]}\n")
        cli.run("signing-keys", "rotate", expect=1)  # the session staged one already: refused, and says so
        cli.run("signing-keys", "list", "--json")
        # settings that are wrong in secret ways stop with one line that does not quote them
        short_kek = session.secret("a key-encryption key too short", secrets.token_hex(16))
        bad = subprocess.run([sys.executable, "-m", "token_service", "check-config"], cwd=ROOT, capture_output=True, text=True,
                             timeout=60, env={**{k: v for k, v in cli_env.items() if k != "TOKEN_SERVICE_KEY_ENCRYPTION_KEY_FILE"},
                                              "TOKEN_SERVICE_KEY_ENCRYPTION_KEY": short_kek})
        wrong_phrase = session.secret("a wrong passphrase", "wrong " + PASSPHRASE)
        (tmp_path / "wrong-passphrase").write_text(wrong_phrase)
        wrong = subprocess.run([sys.executable, "-m", "token_service", "check-config"], cwd=ROOT, capture_output=True, text=True,
                               timeout=60, env={**cli_env, "TOKEN_SERVICE_SIGNING_KEY_PASSPHRASE_FILE": str(tmp_path / "wrong-passphrase")})
        assert "KEY_ENCRYPTION_KEY must be at least 32 random bytes" in bad.stderr, bad.stderr
        assert "passphrase is wrong" in wrong.stderr, wrong.stderr
        for result in (bad, wrong):
            assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
            cli.outputs.append(result.stdout + result.stderr)
        # a wrong Redis password: the command fails without quoting the URL's password
        wrong_redis = session.secret("a wrong Redis password", "wrong-" + redis_password)
        denied = subprocess.run([sys.executable, "-m", "token_service", "api-keys", "list"], cwd=ROOT, capture_output=True,
                                text=True, timeout=60,
                                env={**cli_env, "TOKEN_SERVICE_REDIS_URL": password_redis_url.replace(redis_password, wrong_redis)})
        assert denied.returncode in (2, 3) and denied.stderr.strip(), (denied.returncode, denied.stderr)
        cli.outputs.append(denied.stdout + denied.stderr)
    finally:
        a.stop()
        b.stop()
    logs = a.output() + "\n" + b.output()
    a.close()
    b.close()
    assert " DEBUG " in logs or "[DEBUG]" in logs  # the instances did log at their most verbose level
    assert "token_service.access" in logs and "token_service.audit" in logs
    assert "unhandled RuntimeError" in logs and "cannot parse" not in logs
    assert_no_traceback(session.error_bodies + [logs])
    assert_no_leak("\n".join(session.answers + cli.outputs) + "\n" + logs, {**keys.needles(), **session.needles})


def test_the_haystack_check_finds_a_planted_secret() -> None:
    """The leak check itself: a secret planted in a log line, in another case (hex), or in a header is found."""
    needle = secrets.token_hex(20)
    with pytest.raises(AssertionError, match="planted"):
        assert_no_leak(f"INFO token_service.web refused {needle.upper()}", {"planted": needle})
    with pytest.raises(AssertionError, match="planted"):
        assert_no_leak(f"WWW-Authenticate: Bearer error_description=\"{needle}\"", {"planted": needle})
    with pytest.raises(AssertionError):
        _drop_shown_once(b'{"id": "x"}', ("key",))  # a shown-once field that is not there is not silently skipped
