"""The token codec: encoding for each algorithm, and every reason ``inspect`` gives, with tokens forged by
hand (base64url of JSON, signed with PyJWT's algorithm objects and cryptography) rather than through
the codec, so that each check is met by a token that passes every other one."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import replace
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from token_service.claims import REQUIRED_CLAIMS, AccessClaims
from token_service.keys import KeyRing, SigningKey
from token_service.tokens import MAX_TOKEN_LENGTH, TokenCodec, TokenRejected, Verdict

ISSUER = "http://localhost:8000"
AUDIENCE = "persona-api"
SKEW = 30
NOW = 1_700_000_000
ALGS = ["ES256", "EdDSA", "RS256"]


# -- forging helpers ------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def segment(value: Any) -> str:
    """base64url of ``value``: a str is taken as raw JSON text (to forge duplicates), anything else is dumped."""
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return b64(text.encode("utf-8"))


def claims_dict(**changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": ISSUER, "aud": AUDIENCE, "sub": "user-42", "personaId": "support-bot", "scope": "chat:read chat:write",
        "iat": NOW, "nbf": NOW, "exp": NOW + 900, "jti": "2f1c8a4e-6a55-4d2b-9d3e-0c7b1f6f2a11", "client_id": "AbCdEfGh12345678",
    }
    claims.update(changes)
    return claims


def header_for(key: SigningKey, **changes: Any) -> dict[str, Any]:
    header: dict[str, Any] = {"alg": key.alg, "typ": "at+jwt", "kid": key.kid}
    header.update(changes)
    return {name: value for name, value in header.items() if value is not None}


def raw_signature(key: SigningKey, signing_input: bytes) -> bytes:
    return bytes(jwt.get_algorithm_by_name(key.alg).sign(signing_input, key.private_key))


def forge(key: SigningKey, header: Any = None, payload: Any = None) -> str:
    """A token with ``header`` and ``payload`` (defaults: good ones), signed by ``key``."""
    head = segment(header_for(key) if header is None else header)
    body = segment(claims_dict() if payload is None else payload)
    signing_input = f"{head}.{body}".encode("ascii")
    return f"{head}.{body}.{b64(raw_signature(key, signing_input))}"


def codes(verdict: Verdict) -> list[str]:
    return [reason.code for reason in verdict.reasons]


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys() -> dict[str, SigningKey]:
    return {alg: SigningKey.generate(alg) for alg in ALGS}  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def stranger() -> SigningKey:
    """A key the ring does not hold."""
    return SigningKey.generate("ES256")


@pytest.fixture(scope="module")
def ring(keys: dict[str, SigningKey]) -> KeyRing:
    return KeyRing(keys=tuple(keys.values()), signing_kid=keys["ES256"].kid)


@pytest.fixture(scope="module")
def es(keys: dict[str, SigningKey]) -> SigningKey:
    return keys["ES256"]


@pytest.fixture
def codec() -> TokenCodec:
    return TokenCodec(ISSUER, AUDIENCE, SKEW)


def inspect(codec: TokenCodec, ring: KeyRing, token: str, now: float = NOW) -> Verdict:
    verdict = codec.inspect(token, ring, now)
    for reason in verdict.reasons:
        assert token not in reason.detail
        assert "\n" not in reason.detail
    return verdict


def assert_malformed(codec: TokenCodec, ring: KeyRing, token: Any) -> Verdict:
    verdict = codec.inspect(token, ring, NOW)
    assert codes(verdict) == ["malformed"], verdict.reasons
    assert verdict.claims is None
    assert not verdict.valid
    with pytest.raises(TokenRejected) as info:
        codec.verify(token, ring, NOW)
    assert info.value.reason.code == "malformed"
    if isinstance(token, str) and token:
        assert token not in str(info.value)
    return verdict


# -- encoding -------------------------------------------------------------------------------------


def access_claims(**changes: Any) -> AccessClaims:
    claims = AccessClaims.from_dict(claims_dict())
    assert claims is not None
    return replace(claims, **changes)


@pytest.mark.parametrize("alg", ALGS)
def test_encode_then_inspect_for_each_algorithm(codec: TokenCodec, ring: KeyRing, keys: dict[str, SigningKey], alg: str) -> None:
    key = keys[alg]
    claims = access_claims()
    token = codec.encode(claims, key)
    assert token.count(".") == 2
    header = jwt.get_unverified_header(token)
    assert header == {"alg": alg, "typ": "at+jwt", "kid": key.kid}
    verdict = inspect(codec, ring, token)
    assert verdict.valid
    assert verdict.reasons == ()
    assert verdict.claims == claims
    assert verdict.header == header
    assert verdict.raw_claims == claims_dict()
    assert codec.verify(token, ring, NOW) == claims


@pytest.mark.parametrize("alg", ALGS)
def test_encoded_tokens_are_standard_jwts(codec: TokenCodec, keys: dict[str, SigningKey], alg: str) -> None:
    """A third-party verifier (PyJWT, strict) accepts what the codec signs."""
    key = keys[alg]
    token = codec.encode(access_claims(), key)
    decoded = jwt.decode(token, key.public_key, algorithms=[alg], audience=AUDIENCE, issuer=ISSUER,
                         options={"require": list(REQUIRED_CLAIMS), "verify_exp": False, "verify_iat": False, "verify_nbf": False})
    assert decoded == claims_dict()


def test_encode_needs_a_private_key(codec: TokenCodec, es: SigningKey) -> None:
    public_only = SigningKey(kid=es.kid, alg=es.alg, public_key=es.public_key, public_jwk=es.public_jwk)
    with pytest.raises(ValueError):
        codec.encode(access_claims(), public_only)


@pytest.mark.parametrize("alg", ALGS)
def test_forged_good_tokens_are_valid(codec: TokenCodec, ring: KeyRing, keys: dict[str, SigningKey], alg: str) -> None:
    """The forging helper makes tokens the codec accepts: so each refusal below is due to the one change made."""
    assert inspect(codec, ring, forge(keys[alg])).valid


def test_application_at_jwt_typ_is_accepted(codec: TokenCodec, ring: KeyRing, es: SigningKey) -> None:
    token = forge(es, header_for(es, typ="application/at+jwt"))
    verdict = inspect(codec, ring, token)
    assert verdict.valid
    assert verdict.header is not None and verdict.header["typ"] == "application/at+jwt"


# -- malformed ------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", ["", "abc", "a.b", "a.b.c.d", "a.b.c.d.e", "...", None, b"a.b.c", 42])
def test_not_three_segments_or_not_text_is_malformed(codec: TokenCodec, ring: KeyRing, token: Any) -> None:
    assert_malformed(codec, ring, token)


def test_two_and_five_parts_of_a_good_token_are_malformed(codec: TokenCodec, ring: KeyRing, es: SigningKey) -> None:
    head, body, sig = forge(es).split(".")
    assert_malformed(codec, ring, f"{head}.{body}")
    assert_malformed(codec, ring, f"{head}.{body}.{sig}.{sig}.{sig}")
    assert_malformed(codec, ring, f"{head}..{body}.{sig}")


@pytest.mark.parametrize("place", ["header", "payload", "signature"])
@pytest.mark.parametrize("spoil", ["plus", "slash", "padding", "space", "length", "non_ascii", "newline"])
def test_bad_base64url_is_malformed(codec: TokenCodec, ring: KeyRing, es: SigningKey, place: str, spoil: str) -> None:
    parts = forge(es).split(".")
    index = ["header", "payload", "signature"].index(place)
    part = parts[index]
    parts[index] = {
        "plus": "+" + part[1:],
        "slash": part[:-1] + "/",
        "padding": part + "==",
        "space": part[:5] + " " + part[5:],
        "length": part + "A" * (1 if len(part) % 4 == 0 else (5 - len(part) % 4)),
        "non_ascii": part[:-1] + "\u00e9",
        "newline": part + "\n",
    }[spoil]
    if spoil == "length":
        assert len(parts[index]) % 4 == 1
    assert_malformed(codec, ring, ".".join(parts))


@pytest.mark.parametrize("place", ["header", "payload", "signature"])
def test_non_canonical_base64url_is_refused(codec: TokenCodec, ring: KeyRing, keys: dict[str, SigningKey], place: str) -> None:
    """A segment whose last character carries non-zero unused bits decodes to the same bytes: strict base64url refuses it."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for key in keys.values():
        parts = forge(key).split(".")
        index = ["header", "payload", "signature"].index(place)
        part = parts[index]
        if len(part) % 4 in (2, 3):
            break
    else:
        pytest.skip("no segment with unused bits")
    last = alphabet.index(part[-1])
    spare_bits = 4 if len(part) % 4 == 2 else 2
    twin = part[:-1] + alphabet[last | 1]
    assert last & ((1 << spare_bits) - 1) == 0 and twin != part
    assert base64.urlsafe_b64decode(twin + "=" * (-len(twin) % 4)) == base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    parts[index] = twin
    verdict = inspect(codec, KeyRing(keys=tuple(keys.values()), signing_kid=None), ".".join(parts))
    assert not verdict.valid
    assert verdict.claims is None


@pytest.mark.parametrize("header", ["[]", '"at+jwt"', "1", "null", "true", "{", "", '{"alg":"ES256"', "{}x"])
def test_header_that_is_not_a_json_object_is_malformed(codec: TokenCodec, ring: KeyRing, es: SigningKey, header: str) -> None:
    assert_malformed(codec, ring, forge(es, header=header))


def test_header_that_is_not_utf8_is_malformed(codec: TokenCodec, ring: KeyRing, es: SigningKey) -> None:
    head = b64(b'{"alg":"ES256","typ":"\xff\xfe","kid":"x"}')
    _, body, sig = forge(es).split(".")
    assert_malformed(codec, ring, f"{head}.{body}.{sig}")


def test_deeply_nested_header_is_malformed(codec: TokenCodec, ring: KeyRing, es: SigningKey) -> None:
    depth = 1500
    token = forge(es, header="[" * depth + "]" * depth, payload={})
    assert len(token) <= MAX_TOKEN_LENGTH
    assert_malformed(codec, ring, token)


def test_deeply_nested_payload_is_malformed(codec: TokenCodec, ring: KeyRing, es: SigningKey) -> None:
    depth = 1400
    token = forge(es, payload='{"a":' + "[" * depth + "]" * depth + "}")
    assert len(token) <= MAX_TOKEN_LENGTH
    assert_malformed(codec, ring, token)


def test_duplicate_member_in_header_is_malformed(codec: TokenCodec, ring: KeyRing, es: SigningKey) -> None:
    header = f'{{"alg":"ES256","typ":"at+jwt","kid":"{es.kid}","alg":"ES256"}}'
    assert_malformed(codec, ring, forge(es, header=header))
    header = f'{{"alg":"none","typ":"at+jwt","kid":"{es.kid}","alg":"ES256"}}'
    assert_malformed(codec, ring, forge(es, header=header))


def test_duplicate_member_in_payload_is_malformed(codec: TokenCodec, ring: KeyRing, es: SigningKey) -> None:
    good = json.dumps(claims_dict(), separators=(",", ":"))
    payload = good[:-1] + ',"sub":"admin"}'
    verdict = assert_malformed(codec, ring, forge(es, payload=payload))
    assert verdict.header == header_for(es)


@pytest.mark.parametrize("typ", [None, "JWT", "jwt", "at+jwt ", "application/jwt", "", 1, ["at+jwt"], "at-jwt"])
def test_typ_other_than_at_jwt_is_malformed(codec: TokenCodec, ring: KeyRing, es: SigningKey, typ: Any) -> None:
    header = header_for(es)
    if typ is None:
        del header["typ"]
    else:
        header["typ"] = typ
    verdict = assert_malformed(codec, ring, forge(es, header=header))
    assert verdict.header == header


@pytest.mark.parametrize("crit", [["exp"], [], ["b64"], "exp"])
def test_crit_header_is_malformed(codec: TokenCodec, ring: KeyRing, es: SigningKey, crit: Any) -> None:
    assert_malformed(codec, ring, forge(es, header=header_for(es, crit=crit)))


@pytest.mark.parametrize(("member", "value"), [
    ("jku", "https://evil.example/jwks.json"), ("x5u", "https://evil.example/cert.pem"),
    ("jwk", {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}), ("x5c", ["AAAA"]), ("x5t", "AAAA"),
    ("b64", False), ("cty", "JWT"), ("zip", "DEF"), ("enc", "A256GCM"), ("nonce", "n"),
])
def test_extra_header_member_is_malformed(codec: TokenCodec, ring: KeyRing, es: SigningKey, member: str, value: Any) -> None:
    assert_malformed(codec, ring, forge(es, header=header_for(es, **{member: value})))


@pytest.mark.parametrize(("alg", "kid"), [(None, "KID"), ("KEEP", None), ("KEEP", ""), ("KEEP", 7), ("KEEP", ["x"]), (1, "KID")])
def test_header_without_alg_or_kid_is_malformed(codec: TokenCodec, ring: KeyRing, es: SigningKey, alg: Any, kid: Any) -> None:
    header: dict[str, Any] = {"typ": "at+jwt"}
    if alg is not None:
        header["alg"] = es.alg if alg == "KEEP" else alg
    if kid is not None:
        header["kid"] = es.kid if kid == "KID" else kid
    assert_malformed(codec, ring, forge(es, header=header))


@pytest.mark.parametrize("claim", REQUIRED_CLAIMS)
def test_missing_claim_is_malformed(codec: TokenCodec, ring: KeyRing, es: SigningKey, claim: str) -> None:
    payload = claims_dict()
    del payload[claim]
    verdict = assert_malformed(codec, ring, forge(es, payload=payload))
    assert verdict.header == header_for(es)
    assert verdict.raw_claims == payload


@pytest.mark.parametrize(("claim", "value"), [
    ("email", "user@example.com"), ("azp", "x"), ("roles", ["admin"]), ("cnf", {}), ("act", {"sub": "admin"}), ("scp", "x"),
])
def test_extra_claim_is_malformed(codec: TokenCodec, ring: KeyRing, es: SigningKey, claim: str, value: Any) -> None:
    assert_malformed(codec, ring, forge(es, payload=claims_dict(**{claim: value})))


@pytest.mark.parametrize("claim", ["iat", "nbf", "exp"])
@pytest.mark.parametrize("value", [float(NOW), NOW + 0.5, True, False, str(NOW), None, [NOW], {"t": NOW}])
def test_time_claim_of_the_wrong_type_is_malformed(codec: TokenCodec, ring: KeyRing, es: SigningKey, claim: str, value: Any) -> None:
    assert_malformed(codec, ring, forge(es, payload=claims_dict(**{claim: value})))


@pytest.mark.parametrize("claim", ["iat", "nbf", "exp"])
@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e9", f"{NOW}.0"])
def test_time_claim_as_non_integer_json_is_malformed(codec: TokenCodec, ring: KeyRing, es: SigningKey, claim: str, literal: str) -> None:
    payload = json.dumps(claims_dict(**{claim: 0}), separators=(",", ":")).replace(f'"{claim}":0', f'"{claim}":{literal}')
    assert_malformed(codec, ring, forge(es, payload=payload))


@pytest.mark.parametrize(("claim", "value"), [
    ("aud", [AUDIENCE]), ("aud", [AUDIENCE, "other"]), ("aud", None), ("aud", 1),
    ("iss", None), ("iss", [ISSUER]),
    ("sub", ""), ("sub", "user 42"), ("sub", "x" * 257), ("sub", "user\n"), ("sub", "us\u00e9r"), ("sub", 42),
    ("personaId", ""), ("personaId", "support bot"), ("personaId", "p" * 129), ("personaId", "bot/1"), ("personaId", "bot\n"),
    ("client_id", ""), ("client_id", "key id"), ("client_id", "k\n"), ("client_id", None),
    ("jti", ""), ("jti", "j" * 257), ("jti", "a b"), ("jti", "j\n"), ("jti", 7),
    ("scope", ["chat:read"]), ("scope", "chat:read  chat:write"), ("scope", " chat:read"), ("scope", "chat:read "), ("scope", None),
])
def test_claim_of_the_wrong_shape_is_malformed(codec: TokenCodec, ring: KeyRing, es: SigningKey, claim: str, value: Any) -> None:
    assert_malformed(codec, ring, forge(es, payload=claims_dict(**{claim: value})))


@pytest.mark.parametrize("payload", ["[]", '"x"', "null", "{", ""])
def test_signed_payload_that_is_not_an_object_is_malformed(codec: TokenCodec, ring: KeyRing, es: SigningKey, payload: str) -> None:
    assert_malformed(codec, ring, forge(es, payload=payload))


def test_empty_scope_is_allowed(codec: TokenCodec, ring: KeyRing, es: SigningKey) -> None:
    verdict = inspect(codec, ring, forge(es, payload=claims_dict(scope="")))
    assert verdict.valid
    assert verdict.claims is not None and verdict.claims.scopes == ()


def signed_token_of_length(key: SigningKey, target: int) -> str | None:
    """A well-signed, otherwise valid token exactly ``target`` characters long, if one can be spelt."""
    for typ in ("at+jwt", "application/at+jwt", "AT+JWT", "Application/at+jwt"):
        header = header_for(key, typ=typ)
        base = len(forge(key, header=header, payload=claims_dict(scope="s")))
        for extra in range(max(0, (target - base) * 3 // 4 - 4), (target - base) * 3 // 4 + 4):
            token = forge(key, header=header, payload=claims_dict(scope="s" * (1 + extra)))
            if len(token) == target:
                return token
    return None


def test_size_limit_boundary(codec: TokenCodec, ring: KeyRing, es: SigningKey) -> None:
    seen_under = seen_over = False
    for target in range(MAX_TOKEN_LENGTH - 3, MAX_TOKEN_LENGTH + 4):
        token = signed_token_of_length(es, target)
        if token is None:
            continue
        verdict = inspect(codec, ring, token)
        if target <= MAX_TOKEN_LENGTH:
            assert verdict.valid, (target, verdict.reasons)
            seen_under = seen_under or target == MAX_TOKEN_LENGTH
        else:
            assert codes(verdict) == ["malformed"], target
            assert verdict.header is None
            seen_over = seen_over or target == MAX_TOKEN_LENGTH + 1
    assert seen_under and seen_over


def test_oversize_token_is_malformed_before_anything_else(codec: TokenCodec, ring: KeyRing, es: SigningKey) -> None:
    token = forge(es, payload=claims_dict(scope="s" * 4000, iss="https://evil.example", exp=NOW - 10_000))
    assert len(token) > MAX_TOKEN_LENGTH
    verdict = assert_malformed(codec, ring, token)
    assert verdict.header is None


# -- unknown key ----------------------------------------------------------------------------------


def test_unknown_kid(codec: TokenCodec, ring: KeyRing, stranger: SigningKey) -> None:
    verdict = inspect(codec, ring, forge(stranger))
    assert codes(verdict) == ["unknown_key"]
    assert verdict.header == header_for(stranger)
    assert verdict.claims is None
    with pytest.raises(TokenRejected) as info:
        codec.verify(forge(stranger), ring, NOW)
    assert info.value.reason.code == "unknown_key"


def test_unknown_kid_in_an_empty_ring(codec: TokenCodec, es: SigningKey) -> None:
    assert codes(inspect(codec, KeyRing(keys=(), signing_kid=None), forge(es))) == ["unknown_key"]


def test_kid_looking_like_a_thumbprint_of_another_form(codec: TokenCodec, ring: KeyRing, es: SigningKey) -> None:
    for kid in (es.kid + "=", es.kid.lower(), " " + es.kid, es.kid[:-1]):
        verdict = inspect(codec, ring, forge(es, header=header_for(es, kid=kid)))
        assert codes(verdict) == ["unknown_key"], kid


# -- bad signature --------------------------------------------------------------------------------


def assert_bad_signature(codec: TokenCodec, ring: KeyRing, token: str) -> Verdict:
    verdict = inspect(codec, ring, token)
    assert codes(verdict) == ["bad_signature"], verdict.reasons
    assert verdict.claims is None
    assert verdict.raw_claims is None
    assert not verdict.valid
    return verdict


@pytest.mark.parametrize("alg", ALGS)
def test_tampered_payload(codec: TokenCodec, ring: KeyRing, keys: dict[str, SigningKey], alg: str) -> None:
    head, _, sig = forge(keys[alg]).split(".")
    body = segment(claims_dict(sub="admin"))
    assert_bad_signature(codec, ring, f"{head}.{body}.{sig}")


@pytest.mark.parametrize("alg", ALGS)
def test_tampered_header(codec: TokenCodec, ring: KeyRing, keys: dict[str, SigningKey], alg: str) -> None:
    key = keys[alg]
    _, body, sig = forge(key).split(".")
    head = segment(header_for(key, typ="application/at+jwt"))
    assert_bad_signature(codec, ring, f"{head}.{body}.{sig}")


@pytest.mark.parametrize("alg", ALGS)
def test_signature_of_another_token(codec: TokenCodec, ring: KeyRing, keys: dict[str, SigningKey], alg: str) -> None:
    key = keys[alg]
    head, body, _ = forge(key).split(".")
    other_sig = forge(key, payload=claims_dict(jti="another")).split(".")[2]
    assert_bad_signature(codec, ring, f"{head}.{body}.{other_sig}")


def test_signed_by_a_stranger_under_a_known_kid(codec: TokenCodec, ring: KeyRing, es: SigningKey, stranger: SigningKey) -> None:
    assert_bad_signature(codec, ring, forge(stranger, header=header_for(es)))


@pytest.mark.parametrize("alg", ALGS)
@pytest.mark.parametrize("signature", [b"", b"\x00", b"\x00" * 64, b"\x00" * 384, b"\xff" * 64])
def test_junk_signatures(codec: TokenCodec, ring: KeyRing, keys: dict[str, SigningKey], alg: str, signature: bytes) -> None:
    head, body, _ = forge(keys[alg]).split(".")
    assert_bad_signature(codec, ring, f"{head}.{body}.{b64(signature)}")


def test_ecdsa_all_zero_signature(codec: TokenCodec, ring: KeyRing, es: SigningKey) -> None:
    """r = s = 0 (the "psychic signature" of CVE-2022-21449) must never verify."""
    head, body, _ = forge(es).split(".")
    assert_bad_signature(codec, ring, f"{head}.{body}.{b64(bytes(64))}")


def test_ecdsa_der_signature_is_not_accepted(codec: TokenCodec, ring: KeyRing, es: SigningKey) -> None:
    """JWS ES256 signatures are raw r||s; a DER-encoded one (what cryptography makes) is refused."""
    head = segment(header_for(es))
    body = segment(claims_dict())
    assert isinstance(es.private_key, ec.EllipticCurvePrivateKey)
    der = es.private_key.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
    assert_bad_signature(codec, ring, f"{head}.{body}.{b64(der)}")


def test_ecdsa_high_s_twin_is_checked_by_the_primitive(codec: TokenCodec, ring: KeyRing, es: SigningKey) -> None:
    """(r, n - s) is also a valid ECDSA signature (cryptography accepts high s), so a token's text is not unique:
    nothing may key on it (revocation keys on jti). Whatever the codec decides, it decides without crashing."""
    token = forge(es)
    head, body, sig = token.split(".")
    raw = base64.urlsafe_b64decode(sig + "==")
    n = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    r, s = raw[:32], int.from_bytes(raw[32:], "big")
    twin = f"{head}.{body}.{b64(r + (n - s).to_bytes(32, 'big'))}"
    verdict = inspect(codec, ring, twin)
    assert codes(verdict) in ([], ["bad_signature"])


@pytest.mark.parametrize("alg_header", ["none", "None", "NONE", "HS256", "HS384", "ES384", "ES512", "RS512", "PS256", "EdDSA", "RS256",
                                        "Ed25519", ""])
def test_algorithm_other_than_the_keys_is_a_bad_signature(codec: TokenCodec, ring: KeyRing, es: SigningKey, alg_header: str) -> None:
    """The algorithm comes from the key, never from the token (RFC 8725 §3.1)."""
    header = header_for(es, alg=alg_header)
    head, body = segment(header), segment(claims_dict())
    signing_input = f"{head}.{body}".encode()
    # Sign as well as an attacker could: with the ES256 key, or an empty signature for "none".
    sig = b"" if alg_header.lower() == "none" else raw_signature(es, signing_input)
    assert_bad_signature(codec, ring, f"{head}.{body}.{b64(sig)}")


@pytest.mark.parametrize("alg", ALGS)
def test_hmac_keyed_with_the_public_key_is_refused(codec: TokenCodec, ring: KeyRing, keys: dict[str, SigningKey], alg: str) -> None:
    """The algorithm-confusion attack: HS256 with the published public key (PEM or JWK) as the HMAC secret."""
    key = keys[alg]
    pem = key.public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    for secret in (pem, json.dumps(key.public_jwk).encode(), key.kid.encode()):
        head, body = segment(header_for(key, alg="HS256")), segment(claims_dict())
        sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
        assert_bad_signature(codec, ring, f"{head}.{body}.{b64(sig)}")


def test_alg_of_another_ring_key_is_a_bad_signature(codec: TokenCodec, ring: KeyRing, keys: dict[str, SigningKey]) -> None:
    """A token signed by the ring's EdDSA key but naming the ES256 key's kid."""
    token = forge(keys["EdDSA"], header=header_for(keys["ES256"], alg="EdDSA"))
    assert_bad_signature(codec, ring, token)


def test_bad_signature_over_an_unreadable_payload(codec: TokenCodec, ring: KeyRing, es: SigningKey) -> None:
    head, _, sig = forge(es).split(".")
    verdict = inspect(codec, ring, f"{head}.{segment('{not json')}.{sig}")
    assert codes(verdict) in (["malformed"], ["bad_signature"])
    assert verdict.claims is None


# -- time -----------------------------------------------------------------------------------------
# The rule (tokens.py): expired when exp <= now - skew; not yet valid when nbf > now + skew or iat > now + skew.


def token_at(es: SigningKey, **times: int) -> str:
    return forge(es, payload=claims_dict(**times))


def test_exp_boundary(codec: TokenCodec, ring: KeyRing, es: SigningKey) -> None:
    exp = NOW + 900
    token = token_at(es, iat=NOW, nbf=NOW, exp=exp)
    assert inspect(codec, ring, token, exp - 1).valid
    assert inspect(codec, ring, token, exp).valid
    assert inspect(codec, ring, token, exp + SKEW - 1).valid
    assert inspect(codec, ring, token, exp + SKEW - 0.001).valid
    for now in (exp + SKEW, exp + SKEW + 0.001, exp + SKEW + 1, exp + 10 * 86400):
        verdict = inspect(codec, ring, token, now)
        assert codes(verdict) == ["expired"], now
        assert verdict.claims is not None


def test_exp_boundary_without_skew(ring: KeyRing, es: SigningKey) -> None:
    codec = TokenCodec(ISSUER, AUDIENCE, 0)
    token = token_at(es, iat=NOW, nbf=NOW, exp=NOW + 60)
    assert inspect(codec, ring, token, NOW + 59).valid
    assert inspect(codec, ring, token, NOW + 59.999).valid
    assert codes(inspect(codec, ring, token, NOW + 60)) == ["expired"]


def test_nbf_boundary(codec: TokenCodec, ring: KeyRing, es: SigningKey) -> None:
    nbf = NOW + 100
    token = token_at(es, iat=NOW, nbf=nbf, exp=NOW + 900)
    assert inspect(codec, ring, token, nbf).valid
    assert inspect(codec, ring, token, nbf - SKEW).valid
    for now in (nbf - SKEW - 0.001, nbf - SKEW - 1, nbf - 1000):
        verdict = inspect(codec, ring, token, now)
        assert codes(verdict) == ["not_yet_valid"], now
        assert verdict.claims is not None


def test_iat_boundary(codec: TokenCodec, ring: KeyRing, es: SigningKey) -> None:
    """An iat further in the future than the skew is invalid even when nbf is fine (API.md)."""
    iat = NOW + 100
    token = token_at(es, iat=iat, nbf=NOW, exp=NOW + 900)
    assert inspect(codec, ring, token, iat - SKEW).valid
    assert inspect(codec, ring, token, iat).valid
    for now in (iat - SKEW - 0.001, iat - SKEW - 1):
        assert codes(inspect(codec, ring, token, now)) == ["not_yet_valid"], now


def test_nbf_and_iat_boundary_without_skew(ring: KeyRing, es: SigningKey) -> None:
    codec = TokenCodec(ISSUER, AUDIENCE, 0)
    token = token_at(es, iat=NOW, nbf=NOW, exp=NOW + 60)
    assert inspect(codec, ring, token, NOW).valid
    assert codes(inspect(codec, ring, token, NOW - 0.001)) == ["not_yet_valid"]
    assert codes(inspect(codec, ring, token, NOW - 1)) == ["not_yet_valid"]


def test_both_expired_and_not_yet_valid(codec: TokenCodec, ring: KeyRing, es: SigningKey) -> None:
    token = token_at(es, iat=NOW + 1000, nbf=NOW + 1000, exp=NOW - 1000)
    assert codes(inspect(codec, ring, token)) == ["expired", "not_yet_valid"]


# -- issuer and audience --------------------------------------------------------------------------


@pytest.mark.parametrize("iss", ["https://evil.example", ISSUER + "/", ISSUER.upper(), "", "http://localhost:8001", " " + ISSUER])
def test_wrong_issuer(codec: TokenCodec, ring: KeyRing, es: SigningKey, iss: str) -> None:
    verdict = inspect(codec, ring, forge(es, payload=claims_dict(iss=iss)))
    assert codes(verdict) == ["wrong_issuer"]
    assert verdict.claims is not None and verdict.claims.iss == iss
    with pytest.raises(TokenRejected) as info:
        codec.verify(forge(es, payload=claims_dict(iss=iss)), ring, NOW)
    assert info.value.reason.code == "wrong_issuer"


@pytest.mark.parametrize("aud", ["other-api", AUDIENCE.upper(), "", AUDIENCE + " ", "persona-api,other"])
def test_wrong_audience(codec: TokenCodec, ring: KeyRing, es: SigningKey, aud: str) -> None:
    verdict = inspect(codec, ring, forge(es, payload=claims_dict(aud=aud)))
    assert codes(verdict) == ["wrong_audience"]


def test_every_reason_is_listed_together(codec: TokenCodec, ring: KeyRing, es: SigningKey) -> None:
    token = forge(es, payload=claims_dict(iss="https://evil.example", exp=NOW - 3600))
    verdict = inspect(codec, ring, token)
    assert codes(verdict) == ["expired", "wrong_issuer"]
    assert verdict.claims is not None
    with pytest.raises(TokenRejected) as info:
        codec.verify(token, ring, NOW)
    assert info.value.reason.code == "expired"

    token = forge(es, payload=claims_dict(iss="https://evil.example", aud="other", iat=NOW + 600, nbf=NOW + 600, exp=NOW - 600))
    assert codes(inspect(codec, ring, token)) == ["expired", "not_yet_valid", "wrong_issuer", "wrong_audience"]

    token = forge(es, payload=claims_dict(aud="other", nbf=NOW + 600))
    assert codes(inspect(codec, ring, token)) == ["not_yet_valid", "wrong_audience"]


def test_claims_are_not_given_when_the_signature_fails(codec: TokenCodec, ring: KeyRing, es: SigningKey) -> None:
    head, _, sig = forge(es, payload=claims_dict(iss="https://evil.example")).split(".")
    body = segment(claims_dict(iss="https://evil.example", sub="admin"))
    verdict = inspect(codec, ring, f"{head}.{body}.{sig}")
    assert codes(verdict) == ["bad_signature"]
    assert verdict.claims is None and verdict.raw_claims is None


def test_inspect_never_raises_on_single_character_changes(codec: TokenCodec, ring: KeyRing, es: SigningKey) -> None:
    """Every one-character change of a good token is refused, and refused with a verdict (never an exception)."""
    token = forge(es)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ \u00e9"
    for index in range(len(token)):
        for char in alphabet:
            if char == token[index]:
                continue
            changed = token[:index] + char + token[index + 1:]
            verdict = codec.inspect(changed, ring, NOW)
            assert not verdict.valid, (index, char)
            assert verdict.reasons
