"""Every known JWT attack (RFC 8725, the OWASP JWT cheat sheet), tried on the three places that decide
whether a token is good: ``GET /v1/verify``, ``POST /v1/introspect`` (must answer exactly
``{"active": false}``) and the in-process ``token_service.verifier.Verifier``.

The attack tokens are built by hand (base64url of crafted headers, payloads and signatures, with
``cryptography``), using the service's own public and private keys where an attack needs them. Each
case runs on each surface. Positive controls (a minted token, a token this module forges with the
service's key, tokens just inside the clock skew and at the size limit) must be accepted on every
surface, so a harness that refused everything would fail.

One module-scoped world: a real redis-server of its own, an app on it (the Redis backend: the
deployment every instance shares; the token checks do not depend on the store, and the verifier's
revocation source, ``RedisRevocations``, needs the service's Redis), the app also served over HTTP on
loopback so that the verifier fetches the JWKS with its real HTTP fetcher, and an "attacker" HTTP server
on loopback that ``jku`` and ``x5u`` point at and that must never receive a request. A second world,
whose signing key has been revoked by kid, serves the revoked-key cases.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID
from werkzeug.serving import make_server

from tests.conftest import ADMIN_KEY, Actions, FakeClock, RedisServer, bearer, write_signing_key
from token_service import Settings, create_app
from token_service.keys import SigningKey, thumbprint
from token_service.tokens import MAX_TOKEN_LENGTH
from token_service.verifier import RedisRevocations, TokenInvalid, Verifier

P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


# -- encoding by hand ---------------------------------------------------------------------------------


def b64(raw: bytes) -> str:
    """base64url without padding, as a JWS segment."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def segment(part: dict[str, Any] | str | bytes) -> str:
    """A segment from a dict (compact JSON), from raw JSON text (to write duplicates), or from bytes."""
    if isinstance(part, dict):
        return b64(json.dumps(part, separators=(",", ":")).encode())
    if isinstance(part, str):
        return b64(part.encode())
    return b64(part)


def es256_raw(private_key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """An ES256 signature as JWS writes it: r and s, 32 big-endian bytes each (RFC 7518 §3.4)."""
    r, s = decode_dss_signature(private_key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def der_integers(*values: int) -> bytes:
    """A DER SEQUENCE of small non-negative INTEGERs (an ECDSA signature as X9.62 encodes it)."""
    body = b""
    for value in values:
        raw = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big")
        body += b"\x02" + bytes([len(raw)]) + raw
    return b"\x30" + bytes([len(body)]) + body


# -- the loopback servers -----------------------------------------------------------------------------


class Recorder:
    """An HTTP server on loopback that records every request it gets (the attacker's key server)."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
                recorder.requests.append(self.path)
                body = recorder.documents.get(self.path, b"{}")
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the signature of the base class
                pass

        self.documents: dict[str, bytes] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Attacker:
    """The attacker's own key, its JWK, a self-signed certificate, and where it publishes them."""

    key: ec.EllipticCurvePrivateKey
    jwk: dict[str, Any]
    kid: str
    cert_der: bytes
    server: Recorder

    @classmethod
    def create(cls, server: Recorder) -> Attacker:
        signing = SigningKey.generate("ES256")
        assert isinstance(signing.private_key, ec.EllipticCurvePrivateKey)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tokens.example.com")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(signing.public_key)
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30)).sign(signing.private_key, hashes.SHA256())
        )
        server.documents["/jwks.json"] = json.dumps({"keys": [signing.public_jwk]}).encode()
        server.documents["/cert.pem"] = cert.public_bytes(serialization.Encoding.PEM)
        return cls(signing.private_key, dict(signing.public_jwk), signing.kid, cert.public_bytes(serialization.Encoding.DER), server)


class World:
    """An app on its own Redis, served in-process (test client) and over loopback HTTP, with a Verifier."""

    def __init__(self, redis_url: str, key_file: str, clock: FakeClock):
        self.settings = Settings(redis_url=redis_url, admin_key=ADMIN_KEY, signing_key_file=key_file, log_level="WARNING")
        self.clock = clock
        self.app = create_app(self.settings, clock=clock)
        self.client = self.app.test_client()
        self.actions = Actions(self.client)
        self.key = SigningKey.from_pem(Path(key_file).read_bytes(), "ES256")
        self.http = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.http_thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.http_thread.start()
        self.revocations = RedisRevocations(redis_url)
        self.verifier = Verifier(
            issuer=self.settings.issuer, audience=self.settings.audience,
            jwks_url=f"http://127.0.0.1:{self.http.server_port}/.well-known/jwks.json",
            revocations=self.revocations, clock_skew=self.settings.clock_skew, clock=clock,
        )
        self.secret = self.actions.create_key("secret", scopes=["chat:read", "chat:write"])["key"]

    def mint(self) -> str:
        return self.actions.token(self.secret)

    def close(self) -> None:
        self.verifier.close()
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture(scope="module")
def attacker_server() -> Iterator[Recorder]:
    server = Recorder()
    yield server
    server.close()


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory, signing_key_file: str, attacker_server: Recorder) -> Iterator[dict[str, Any]]:
    redis_server = RedisServer(tmp_path_factory.mktemp("jwt-attacks-redis"))
    redis_server.start()
    clock = FakeClock()
    main = World(redis_server.url, signing_key_file, clock)
    revoked = World(redis_server.url.removesuffix("/0") + "/1", write_signing_key(tmp_path_factory.mktemp("revoked-key")), clock)
    minted_before = revoked.mint()
    # Accepted everywhere before the revocation (the verifier then keeps the key in its cached JWKS, so
    # afterwards it is the kid's revocation marker that must refuse the token).
    assert all(surface(revoked, minted_before) == "user-42" for surface in SURFACES.values())
    assert revoked.actions.revoke(kid=revoked.key.kid).status_code == 201
    try:
        yield {"main": main, "revoked": revoked, "minted_before_revocation": minted_before,
               "attacker": Attacker.create(attacker_server)}
    finally:
        main.close()
        revoked.close()
        redis_server.stop()


# -- building tokens ----------------------------------------------------------------------------------


class Forge:
    """What an attack may use: the service's public key in every form, its private key (to prove that a
    refusal is due to the attack and not to a badly built token), a genuine token, the attacker's key."""

    def __init__(self, world: World, attacker: Attacker, extras: dict[str, Any]):
        self.world = world
        self.attacker = attacker
        self.extras = extras
        self.now = int(world.clock())
        self.skew = world.settings.clock_skew
        self.kid = world.key.kid
        assert isinstance(world.key.private_key, ec.EllipticCurvePrivateKey)
        self.private_key: ec.EllipticCurvePrivateKey = world.key.private_key
        public = world.key.public_key
        self.public_pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.public_der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.public_jwk = json.dumps(world.key.public_jwk).encode()

    def jwks_document(self) -> bytes:
        """The exact bytes the service publishes at /.well-known/jwks.json."""
        response = self.world.client.get("/.well-known/jwks.json")
        assert response.status_code == 200
        return bytes(response.data)

    def header(self, **changes: Any) -> dict[str, Any]:
        header: dict[str, Any] = {"alg": "ES256", "typ": "at+jwt", "kid": self.kid}
        header.update(changes)
        return {k: v for k, v in header.items() if v is not _DROP}

    def claims(self, **changes: Any) -> dict[str, Any]:
        claims: dict[str, Any] = {
            "iss": self.world.settings.issuer, "aud": self.world.settings.audience, "sub": "user-42",
            "personaId": "support-bot", "scope": "chat:read", "iat": self.now, "nbf": self.now,
            "exp": self.now + 600, "jti": str(uuid.uuid4()), "client_id": "forged-by-test",
        }
        claims.update(changes)
        return {k: v for k, v in claims.items() if v is not _DROP}

    def signed(self, header: dict[str, Any] | str | bytes | None = None, claims: dict[str, Any] | str | None = None,
               key: ec.EllipticCurvePrivateKey | None = None) -> str:
        """header.payload signed ES256 with ``key`` (the service's key by default)."""
        signing_input = f"{segment(self.header() if header is None else header)}.{segment(self.claims() if claims is None else claims)}"
        return f"{signing_input}.{b64(es256_raw(key or self.private_key, signing_input.encode()))}"

    def hmac_signed(self, header: dict[str, Any], secret: bytes, digest: Any = hashlib.sha256) -> str:
        """header.payload with an HMAC keyed by ``secret`` (the key-confusion attack)."""
        signing_input = f"{segment(header)}.{segment(self.claims())}"
        return f"{signing_input}.{b64(hmac.new(secret, signing_input.encode(), digest).digest())}"

    def with_signature(self, signature: bytes | str, header: dict[str, Any] | None = None) -> str:
        """header.payload followed by a chosen signature (bytes are encoded; a str is used as it is)."""
        sig = signature if isinstance(signature, str) else b64(signature)
        return f"{segment(self.header() if header is None else header)}.{segment(self.claims())}.{sig}"

    def genuine(self) -> str:
        """A token the service minted through its API."""
        return self.world.mint()

    def tampered(self, **changes: Any) -> str:
        """A minted token whose claims were changed, keeping the service's original signature."""
        header_segment, payload_segment, signature = self.genuine().split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload_segment + "=" * (-len(payload_segment) % 4)))
        claims.update(changes)
        return f"{header_segment}.{segment(claims)}.{signature}"

    def padded_json(self, length: int, where: str) -> str:
        """A token of exactly ``length`` characters, valid in every other way: insignificant JSON white
        space pads the header or the payload (the signature covers it; 0 to 2 spaces in the other part
        reach lengths that base64 skips)."""
        header_json, claims_json = json.dumps(self.header(), separators=(",", ":")), json.dumps(self.claims(), separators=(",", ":"))

        def b64_length(n: int) -> int:
            return (4 * n + 2) // 3

        fixed = 2 + 86  # the dots and an ES256 signature
        for other in range(3):
            for spaces in range(length):
                h, p = (spaces, other) if where == "header" else (other, spaces)
                total = b64_length(len(header_json) + h) + b64_length(len(claims_json) + p) + fixed
                if total == length:
                    token = self.signed(header_json[:-1] + " " * h + "}", claims_json[:-1] + " " * p + "}")
                    assert len(token) == length
                    return token
                if total > length:
                    break
        raise AssertionError(f"no padding gives a token of {length} characters")

    def resigned_until(self, accept: Callable[[str], bool]) -> str:
        """A freshly forged valid token whose signature segment satisfies ``accept`` (ECDSA is randomized)."""
        for _ in range(200):
            token = self.signed()
            if accept(token.rsplit(".", 1)[1]):
                return token
        raise AssertionError("no signature of the wanted shape in 200 tries")


_DROP = object()


# -- the cases ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One token to try; ``accept`` only for the positive controls."""

    id: str
    build: Callable[[Forge], str]
    accept: bool = False
    world: str = "main"


def _jws_with_padding(forge: Forge, where: int) -> str:
    parts = forge.signed().split(".")
    parts[where] += "=" * (-len(parts[where]) % 4 or 4)
    return ".".join(parts)


def _spare_bits_set(forge: Forge) -> str:
    """The signature's last character changed so that unused low bits are set: a lenient decoder reads
    the same bytes, a strict one refuses the non-canonical text."""
    head, sig = forge.signed().rsplit(".", 1)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    index = alphabet.index(sig[-1])
    unused = {2: 0b1111, 3: 0b11}[len(sig) % 4]  # 64 bytes: 86 characters, the last carries 2 bits and 4 unused
    return f"{head}.{sig[:-1]}{alphabet[index | unused]}"


def _std_alphabet(forge: Forge) -> str:
    token = forge.resigned_until(lambda sig: "-" in sig or "_" in sig)
    head, sig = token.rsplit(".", 1)
    return f"{head}.{sig.replace('-', '+').replace('_', '/')}"


def _real_signature_with(f: Forge, r: int | None = None, s: int | None = None) -> str:
    """A real signature of the header and payload with r or s replaced by zero."""
    header, claims = f.header(), f.claims()
    raw = es256_raw(f.private_key, f"{segment(header)}.{segment(claims)}".encode())
    raw = (bytes(32) if r == 0 else raw[:32]) + (bytes(32) if s == 0 else raw[32:])
    return f"{segment(header)}.{segment(claims)}.{b64(raw)}"


def _insert(token: str, part: int, text: str) -> str:
    parts = token.split(".")
    parts[part] = parts[part][:10] + text + parts[part][10:]
    return ".".join(parts)


def _splice(forge: Forge) -> str:
    """Header and payload of one genuine token with the signature of another."""
    first, second = forge.genuine(), forge.genuine()
    return first.rsplit(".", 1)[0] + "." + second.rsplit(".", 1)[1]


def _jwe_shaped(forge: Forge) -> str:
    header = segment({"alg": "RSA-OAEP-256", "enc": "A256GCM", "typ": "at+jwt", "kid": forge.kid})
    return ".".join([header, b64(b"k" * 32), b64(b"iv" * 6), segment(forge.claims()), b64(b"t" * 16)])


CONTROLS = [
    Case("control-minted-token", lambda f: f.genuine(), accept=True),
    Case("control-forged-with-the-service-key", lambda f: f.signed(), accept=True),
    Case("control-typ-application/at+jwt", lambda f: f.signed(f.header(typ="application/at+jwt")), accept=True),
    Case("control-typ-case-insensitive", lambda f: f.signed(f.header(typ="AT+JWT")), accept=True),
    Case("control-exp-just-inside-skew",
         lambda f: f.signed(claims=f.claims(exp=f.now - f.skew + 1, iat=f.now - 900, nbf=f.now - 900)), accept=True),
    Case("control-nbf-just-inside-skew", lambda f: f.signed(claims=f.claims(nbf=f.now + f.skew)), accept=True),
    Case("control-iat-just-inside-skew", lambda f: f.signed(claims=f.claims(iat=f.now + f.skew, nbf=f.now + f.skew)), accept=True),
    Case("control-token-of-exactly-the-size-limit", lambda f: f.padded_json(MAX_TOKEN_LENGTH, "header"), accept=True),
]

ALG_NONE = [
    Case(f"alg-{alg or 'empty'}-{sig_name}-signature", lambda f, alg=alg, sig=sig: f.with_signature(sig, f.header(alg=alg)))
    for alg in ("none", "None", "NONE", "nOnE", "")
    for sig_name, sig in (("empty", ""), ("junk", b64(b"junk")))
] + [
    Case("alg-none-without-kid", lambda f: f.with_signature("", f.header(alg="none", kid=_DROP))),
    Case("alg-none-with-the-genuine-signature", lambda f: f.with_signature(f.signed().rsplit(".", 1)[1], f.header(alg="none"))),
    Case("alg-missing", lambda f: f.signed(f.header(alg=_DROP))),
    Case("alg-null", lambda f: f.signed(f.header(alg=None))),
    Case("alg-list", lambda f: f.signed(f.header(alg=["ES256"]))),
]


def _public_forms(f: Forge) -> dict[str, bytes]:
    return {"pem": f.public_pem, "der": f.public_der, "jwk": f.public_jwk, "jwks": f.jwks_document()}


KEY_CONFUSION = [
    Case(f"{alg}-keyed-with-the-public-{form}",
         lambda f, alg=alg, form=form, digest=digest: f.hmac_signed(f.header(alg=alg), _public_forms(f)[form], digest))
    for alg, digest in (("HS256", hashlib.sha256), ("HS384", hashlib.sha384), ("HS512", hashlib.sha512))
    for form in ("pem", "der", "jwk", "jwks")
] + [
    Case("HS256-keyed-with-the-public-pem-without-kid", lambda f: f.hmac_signed(f.header(alg="HS256", kid=_DROP), f.public_pem)),
    Case("HS256-keyed-with-the-pem-stripped", lambda f: f.hmac_signed(f.header(alg="HS256"), f.public_pem.strip())),
] + [
    # The service's own, valid ES256 signature, under another algorithm name: the algorithm is the key's.
    Case(f"alg-{alg}-over-a-valid-ES256-signature", lambda f, alg=alg: f.signed(f.header(alg=alg)))
    for alg in ("es256", "ES384", "ES512", "ES256K", "RS256", "PS256", "EdDSA")
]


def _attacker_signed(f: Forge, **header: Any) -> str:
    return f.signed(f.header(**header), key=f.attacker.key)


EMBEDDED_KEYS = [
    Case("jwk-header-attacker-key-without-kid", lambda f: _attacker_signed(f, kid=_DROP, jwk=f.attacker.jwk)),
    Case("jwk-header-attacker-key-with-its-kid", lambda f: _attacker_signed(f, kid=f.attacker.kid, jwk=f.attacker.jwk)),
    Case("jwk-header-attacker-key-with-the-service-kid", lambda f: _attacker_signed(f, jwk=f.attacker.jwk)),
    Case("jku-attacker-jwks-with-its-kid", lambda f: _attacker_signed(f, kid=f.attacker.kid, jku=f.attacker.server.base + "/jwks.json")),
    Case("jku-attacker-jwks-with-the-service-kid", lambda f: _attacker_signed(f, jku=f.attacker.server.base + "/jwks.json")),
    Case("jku-attacker-jwks-without-kid", lambda f: _attacker_signed(f, kid=_DROP, jku=f.attacker.server.base + "/jwks.json")),
    Case("x5u-attacker-cert-with-its-kid", lambda f: _attacker_signed(f, kid=f.attacker.kid, x5u=f.attacker.server.base + "/cert.pem")),
    Case("x5u-attacker-cert-without-kid", lambda f: _attacker_signed(f, kid=_DROP, x5u=f.attacker.server.base + "/cert.pem")),
    Case("x5c-attacker-cert-without-kid", lambda f: _attacker_signed(f, kid=_DROP, x5c=[base64.b64encode(f.attacker.cert_der).decode()])),
    Case("x5c-attacker-cert-with-the-service-kid", lambda f: _attacker_signed(f, x5c=[base64.b64encode(f.attacker.cert_der).decode()])),
    Case("jku-on-a-token-signed-by-the-service-key", lambda f: f.signed(f.header(jku=f.attacker.server.base + "/jwks.json"))),
    Case("crit-exp-on-a-token-signed-by-the-service-key", lambda f: f.signed(f.header(crit=["exp"], exp=f.now + 60))),
    Case("crit-empty-list", lambda f: f.signed(f.header(crit=[]))),
    Case("crit-b64-false", lambda f: f.signed(f.header(crit=["b64"], b64=False))),
]

KID_INJECTION = [
    Case(f"kid-{name}", lambda f, kid=kid: f.signed(f.header(kid=kid)))
    for name, kid in (
        ("traversal-etc-passwd", "../../etc/passwd"),
        ("traversal-deep-dev-null", "../../../../../../../../dev/null"),
        ("dev-null", "/dev/null"),
        ("sql-or-true", "' OR '1'='1"),
        ("sql-union", "x' UNION SELECT 'AA==' --"),
        ("shell", "$(touch /tmp/pwned)|id;"),
        ("null-byte", "\u0000"),
        ("url", "https://attacker.example/jwks.json"),
        ("very-long-within-the-size-limit", "k" * 2400),
        ("crlf-header-injection", "a\r\nX-Auth-Subject: admin"),
        ("empty", ""),
        ("number", 1),
        ("null", None),
        ("bool", True),
        ("redis-glob", "*"),
    )
] + [
    Case("kid-list-holding-the-service-kid", lambda f: f.signed(f.header(kid=[f.kid]))),
    Case("kid-object-holding-the-service-kid", lambda f: f.signed(f.header(kid={"kid": f.kid}))),
    Case("kid-service-kid-then-null-byte", lambda f: f.signed(f.header(kid=f.kid + "\u0000"))),
    Case("kid-null-byte-then-service-kid", lambda f: f.signed(f.header(kid="\u0000" + f.kid))),
    Case("kid-service-kid-with-trailing-space", lambda f: f.signed(f.header(kid=f.kid + " "))),
    Case("kid-service-kid-upper-case", lambda f: f.signed(f.header(kid=f.kid.upper()))),
    Case("kid-traversal-HS256-empty-key", lambda f: f.hmac_signed(f.header(alg="HS256", kid="../../../../../../dev/null"), b"")),
    Case("kid-dev-null-HS256-empty-key", lambda f: f.hmac_signed(f.header(alg="HS256", kid="/dev/null"), b"")),
    Case("kid-missing", lambda f: f.signed(f.header(kid=_DROP))),
    Case("kid-of-the-attacker-key-signed-by-it", lambda f: _attacker_signed(f, kid=f.attacker.kid)),
    Case("kid-of-another-key-signed-by-the-service-key", lambda f: f.signed(f.header(kid=f.attacker.kid))),
    Case("kid-unknown-thumbprint", lambda f: f.signed(f.header(kid=thumbprint(SigningKey.generate("ES256").public_jwk)))),
    Case("kid-revoked-key-forged-after-revocation", lambda f: f.signed(), world="revoked"),
    Case("kid-revoked-key-minted-before-revocation", lambda f: f.extras["minted_before_revocation"], world="revoked"),
]

SIGNATURES = [
    Case("ecdsa-r0-s0-raw-64-zero-bytes", lambda f: f.with_signature(bytes(64))),
    Case("ecdsa-r0-s0-der-encoded", lambda f: f.with_signature(der_integers(0, 0))),
    Case("ecdsa-r-s-equal-curve-order-raw", lambda f: f.with_signature(P256_ORDER.to_bytes(32, "big") * 2)),
    Case("ecdsa-r-s-equal-curve-order-der", lambda f: f.with_signature(der_integers(P256_ORDER, P256_ORDER))),
    Case("ecdsa-r0-with-a-real-s", lambda f: _real_signature_with(f, r=0)),
    Case("ecdsa-s0-with-a-real-r", lambda f: _real_signature_with(f, s=0)),
    Case("ecdsa-valid-signature-der-encoded", lambda f: f.with_signature(f.private_key.sign(
        f"{segment(f.header())}.{segment(f.claims())}".encode(), ec.ECDSA(hashes.SHA256())))),
    Case("ecdsa-signature-truncated", lambda f: f.with_signature(bytes(63))),
    Case("empty-signature", lambda f: f.with_signature("")),
    Case("signature-of-another-key-same-kid", lambda f: _attacker_signed(f)),
    Case("signature-of-another-token-spliced", _splice),
]

TAMPERED = [
    Case(f"tampered-{name}-original-signature", lambda f, changes=changes: f.tampered(**changes))
    for name, changes in (
        ("sub", {"sub": "admin"}),
        ("personaId", {"personaId": "other-bot"}),
        ("scope", {"scope": "chat:read chat:write admin"}),
        ("exp", {"exp": 4102444800}),
        ("aud", {"aud": "other-api"}),
        ("jti", {"jti": "not-revoked"}),
        ("client_id", {"client_id": "sk_other"}),
    )
]

CLAIMS = [
    Case(f"claim-{name}", lambda f, changes=changes: f.signed(claims=f.claims(**changes)))
    for name, changes in (
        ("aud-wrong", {"aud": "other-api"}),
        ("aud-list-with-the-right-audience-only", {"aud": ["persona-api"]}),
        ("aud-list-with-the-right-audience-and-another", {"aud": ["persona-api", "other-api"]}),
        ("aud-null", {"aud": None}),
        ("iss-wrong", {"iss": "https://attacker.example"}),
        ("iss-trailing-slash", {"iss": "http://localhost:8000/"}),
        ("iss-list", {"iss": ["http://localhost:8000"]}),
        ("exp-string", {"exp": "9999999999"}),
        ("exp-float", {"exp": 4102444800.0}),
        ("exp-bool", {"exp": True}),
        ("exp-huge-int", {"exp": 10**30}),
        ("exp-beyond-2**64", {"exp": 2**64 + 1}),
        ("exp-negative", {"exp": -1}),
        ("exp-null", {"exp": None}),
        ("exp-missing", {"exp": _DROP}),
        ("iat-string", {"iat": "0"}),
        ("iat-float", {"iat": 1.5}),
        ("nbf-string", {"nbf": "0"}),
        ("nbf-negative-huge", {"nbf": -(10**30)}),
        ("scope-list", {"scope": ["chat:read"]}),
        ("personaId-number", {"personaId": 7}),
        ("personaId-with-newline", {"personaId": "support-bot\n"}),
        ("sub-null", {"sub": None}),
        ("sub-object", {"sub": {"id": "user-42"}}),
        ("sub-crlf-header-injection", {"sub": "user-42\r\nX-Auth-Persona: admin-bot"}),
        ("jti-missing", {"jti": _DROP}),
        ("jti-number", {"jti": 12345}),
        ("client_id-missing", {"client_id": _DROP}),
        ("extra-admin-claim", {"admin": True}),
    )
] + [
    Case("claims-exp-beyond-skew", lambda f: f.signed(claims=f.claims(exp=f.now - f.skew, iat=f.now - 900, nbf=f.now - 900))),
    Case("claims-exp-long-past", lambda f: f.signed(claims=f.claims(exp=1, iat=0, nbf=0))),
    Case("claims-nbf-beyond-skew", lambda f: f.signed(claims=f.claims(nbf=f.now + f.skew + 1))),
    Case("claims-iat-beyond-skew", lambda f: f.signed(claims=f.claims(iat=f.now + f.skew + 1))),
    Case("payload-json-list", lambda f: f.signed(claims="[1, 2]")),
    Case("payload-json-null", lambda f: f.signed(claims="null")),
    Case("payload-not-json", lambda f: f.signed(claims="not json")),
    Case("payload-nested-beyond-the-recursion-limit", lambda f: f.signed(claims="[" * 1200 + "]" * 1200)),
]


def _dup(before: str, members: str) -> Callable[[Forge], str]:
    """Raw JSON with a member written twice (the header's or the payload's)."""
    def build(f: Forge) -> str:
        header = json.dumps(f.header(), separators=(",", ":"))
        claims = json.dumps(f.claims(), separators=(",", ":"))
        if before == "header":
            return f.signed(header[:-1] + "," + members.replace("KID", f.kid) + "}", claims)
        return f.signed(header, claims[:-1] + "," + members + "}")
    return build


DUPLICATES = [
    Case("duplicate-header-alg-none-last", _dup("header", '"alg":"none"')),
    Case("duplicate-header-alg-ES256-last", lambda f: f.signed(
        '{"alg":"none","typ":"at+jwt","kid":"' + f.kid + '","alg":"ES256"}', json.dumps(f.claims()))),
    Case("duplicate-header-kid", _dup("header", '"kid":"../../dev/null"')),
    Case("duplicate-header-kid-same-value", _dup("header", '"kid":"KID"')),
    Case("duplicate-header-typ", _dup("header", '"typ":"JWT"')),
    Case("duplicate-payload-sub", _dup("payload", '"sub":"admin"')),
    Case("duplicate-payload-exp", _dup("payload", '"exp":4102444800')),
    Case("duplicate-payload-aud", _dup("payload", '"aud":"other-api"')),
    Case("duplicate-payload-scope", _dup("payload", '"scope":"chat:read chat:write admin"')),
]

STRUCTURE = [
    Case("five-part-jwe-shaped", _jwe_shaped),
    Case("five-part-genuine-plus-two", lambda f: f.genuine() + ".AAAA.AAAA"),
    Case("four-part", lambda f: f.genuine() + ".AAAA"),
    Case("two-part-header-payload", lambda f: f.genuine().rsplit(".", 1)[0]),
    Case("two-part-trailing-dot-no-signature", lambda f: f.genuine().rsplit(".", 1)[0] + "."),
    Case("one-part", lambda f: f.genuine().split(".", 1)[0]),
    Case("three-empty-parts", lambda f: ".."),
    Case("leading-dot", lambda f: "." + f.genuine()),
    Case("trailing-dot", lambda f: f.genuine() + "."),
    Case("json-serialization-instead-of-compact",
         lambda f: json.dumps(dict(zip(("protected", "payload", "signature"), f.genuine().split("."), strict=True)))),
]

ENCODING = [
    Case("b64-padding-on-signature", lambda f: _jws_with_padding(f, 2)),
    Case("b64-padding-on-header", lambda f: _jws_with_padding(f, 0)),
    Case("b64-padding-on-payload", lambda f: _jws_with_padding(f, 1)),
    Case("b64-standard-alphabet-plus-slash", _std_alphabet),
    Case("b64-spare-bits-set", _spare_bits_set),
    Case("b64-space-inside-payload", lambda f: _insert(f.signed(), 1, " ")),
    Case("b64-tab-inside-signature", lambda f: _insert(f.signed(), 2, "\t")),
    Case("b64-non-ascii-inside-header", lambda f: _insert(f.signed(), 0, "é")),
    Case("b64-percent-encoded", lambda f: f.resigned_until(lambda sig: "-" in sig).replace("-", "%2D")),
    Case("header-not-utf8", lambda f: f.signed(b'{"alg":"ES256\xff","typ":"at+jwt","kid":"' + f.kid.encode() + b'"}')),
    Case("header-json-list", lambda f: f.signed("[]")),
]

SIZE_AND_HEADER = [
    Case("oversized-token-by-one-padded-header", lambda f: f.padded_json(MAX_TOKEN_LENGTH + 1, "header")),
    Case("oversized-token-by-one-padded-payload", lambda f: f.padded_json(MAX_TOKEN_LENGTH + 1, "payload")),
    Case("oversized-header-segment", lambda f: f.signed(json.dumps(f.header()) [:-1] + " " * 5000 + "}")),
    Case("oversized-garbage-8k", lambda f: "A" * 4000 + "." + "A" * 4000 + "." + "A" * 100),
    Case("typ-missing", lambda f: f.signed(f.header(typ=_DROP))),
    Case("typ-JWT", lambda f: f.signed(f.header(typ="JWT"))),
    Case("typ-jwt-lower", lambda f: f.signed(f.header(typ="jwt"))),
    Case("typ-null", lambda f: f.signed(f.header(typ=None))),
    Case("typ-with-trailing-space", lambda f: f.signed(f.header(typ="at+jwt "))),
    Case("typ-list", lambda f: f.signed(f.header(typ=["at+jwt"]))),
    Case("header-extra-member", lambda f: f.signed(f.header(x="1"))),
    Case("header-extra-cty", lambda f: f.signed(f.header(cty="JWT"))),
    Case("header-extra-zip", lambda f: f.signed(f.header(zip="DEF"))),
    Case("header-extra-x5t", lambda f: f.signed(f.header(x5t=b64(b"t" * 20)))),
    Case("header-extra-enc", lambda f: f.signed(f.header(enc="A256GCM"))),
]

CASES = (CONTROLS + ALG_NONE + KEY_CONFUSION + EMBEDDED_KEYS + KID_INJECTION + SIGNATURES + TAMPERED + CLAIMS + DUPLICATES
         + STRUCTURE + ENCODING + SIZE_AND_HEADER)


# -- the surfaces -------------------------------------------------------------------------------------


def on_verify(world: World, token: str) -> str | None:
    """GET /v1/verify: the subject when accepted (200), None when refused (401, inactive)."""
    response = world.client.get("/v1/verify", headers=bearer(token))
    body = response.get_json()
    if response.status_code == 200:
        assert body["active"] is True and response.headers["X-Auth-Subject"] == body["sub"]
        return str(body["sub"])
    assert response.status_code == 401, (response.status_code, body)
    # A token with a space in it is no bearer credential at all (unauthorized); anything else is invalid_token.
    assert body["active"] is False and body["error"] in ("invalid_token", "unauthorized"), body
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="') and (body["error"] == "unauthorized") == ("error=" not in challenge)
    assert not any(name.startswith("X-Auth-") for name in response.headers.keys())
    assert token not in response.get_data(as_text=True)
    return None


def on_introspect(world: World, token: str) -> str | None:
    """POST /v1/introspect as an admin: the subject when active, None when exactly {"active": false}."""
    response = world.client.post("/v1/introspect", json={"token": token}, headers=bearer(ADMIN_KEY))
    assert response.status_code == 200, (response.status_code, response.get_json())
    body = response.get_json()
    if body.get("active") is True:
        return str(body["sub"])
    assert body == {"active": False}
    return None


def on_verifier(world: World, token: str) -> str | None:
    """The Python Verifier: the subject when it returns claims, None when it raises TokenInvalid (401).
    Anything else (a 503, a crash) propagates and fails the test."""
    try:
        return world.verifier.verify(token).sub
    except TokenInvalid as exc:
        assert token not in str(exc) and token not in exc.description
        return None


SURFACES: dict[str, Callable[[World, str], str | None]] = {
    "verify": on_verify, "introspect": on_introspect, "verifier": on_verifier,
}


@pytest.mark.parametrize("surface", list(SURFACES))
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_attack_is_refused(case: Case, surface: str, worlds: dict[str, Any], attacker_server: Recorder) -> None:
    """The token is refused on the surface (accepted, for the positive controls), and the attacker's key
    server never hears from anyone."""
    world = worlds[case.world]
    forge = Forge(world, worlds["attacker"], worlds)
    token = case.build(forge)
    if not case.id.startswith("oversized-"):
        assert len(token) <= MAX_TOKEN_LENGTH, "the case would be refused for its size, not for what it tries"
    subject = SURFACES[surface](world, token)
    if case.accept:
        assert subject == "user-42", f"{case.id}: a genuine token was refused on {surface}"
    else:
        assert subject is None, f"{case.id}: accepted on {surface}"
    assert attacker_server.requests == [], "a surface fetched a key from a URL named in a token"


def test_the_attacker_server_records_requests(attacker_server: Recorder) -> None:
    """The zero-requests assertions above can fail: a request to the attacker's server is recorded."""
    import urllib.request

    with urllib.request.urlopen(attacker_server.base + "/jwks.json", timeout=5) as response:  # noqa: S310 - loopback
        assert json.loads(response.read())["keys"]
    assert attacker_server.requests == ["/jwks.json"]
    attacker_server.requests.clear()


def test_the_verifier_fetches_only_its_configured_jwks_url(worlds: dict[str, Any]) -> None:
    """The verifier's keys came from the service over HTTP (its real fetcher), never from a token."""
    world = worlds["main"]
    assert world.verifier.verify(world.mint()).sub == "user-42"
    assert world.verifier.keys.fetches >= 1
    assert world.verifier.keys.ring().get(world.key.kid) is not None
    assert worlds["attacker"].kid not in [key.kid for key in world.verifier.keys.ring().keys]
