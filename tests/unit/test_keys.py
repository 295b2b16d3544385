"""Signing keys: RFC 7638 thumbprints as kids, public-only JWKs, PEM loading and its refusals, the ring."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa, x25519

from token_service.keys import KeyMaterialError, KeyRing, SigningKey, thumbprint

ALGS = ["ES256", "EdDSA", "RS256"]
PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")

RFC7638_JWK = {
    "kty": "RSA",
    "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMst"
         "n64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91"
         "CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
    "e": "AQAB",
}
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


@pytest.fixture(scope="module")
def keys() -> dict[str, SigningKey]:
    """One generated key per algorithm (RSA generation is slow: once per module)."""
    return {alg: SigningKey.generate(alg) for alg in ALGS}  # type: ignore[arg-type]


def pem_of(private_key: object, passphrase: bytes | None = None,
           fmt: serialization.PrivateFormat = serialization.PrivateFormat.PKCS8) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    return private_key.private_bytes(serialization.Encoding.PEM, fmt, encryption)  # type: ignore[attr-defined,no-any-return]


def body_lines(pem: bytes) -> list[str]:
    """The base64 lines of a PEM (the key material), for checking that messages do not hold them."""
    return [line for line in pem.decode().splitlines() if line and not line.startswith("-----") and ":" not in line]


def assert_safe_message(exc: BaseException, pem: bytes, passphrase: str | None = None) -> None:
    message = str(exc)
    assert message
    assert "\n" not in message
    assert "BEGIN" not in message and "PRIVATE KEY" not in message
    for line in body_lines(pem):
        assert line not in message
        assert line[:16] not in message
    if passphrase:
        assert passphrase not in message


# -- thumbprints ----------------------------------------------------------------------------------


def test_rfc7638_test_vector() -> None:
    assert thumbprint(RFC7638_JWK) == RFC7638_THUMBPRINT


def test_thumbprint_ignores_non_required_members() -> None:
    decorated = {**RFC7638_JWK, "alg": "RS256", "kid": "2011-04-29", "use": "sig", "key_ops": ["verify"]}
    assert thumbprint(decorated) == RFC7638_THUMBPRINT


def test_thumbprint_depends_on_the_key() -> None:
    other = {**RFC7638_JWK, "e": "AQAC"}
    assert thumbprint(other) != RFC7638_THUMBPRINT


# -- generated keys -------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ALGS)
def test_generated_key_kid_is_the_thumbprint_of_its_public_jwk(keys: dict[str, SigningKey], alg: str) -> None:
    key = keys[alg]
    assert key.alg == alg
    assert key.kid == thumbprint(key.public_jwk)
    assert key.public_jwk["kid"] == key.kid


@pytest.mark.parametrize("alg", ALGS)
def test_public_jwk_has_no_private_member(keys: dict[str, SigningKey], alg: str) -> None:
    jwk = keys[alg].public_jwk
    for member in PRIVATE_MEMBERS:
        assert member not in jwk, member
    assert jwk["use"] == "sig"
    assert jwk["alg"] == alg
    assert "key_ops" not in jwk


@pytest.mark.parametrize(("alg", "kty", "members"), [
    ("ES256", "EC", {"kty", "crv", "x", "y", "kid", "alg", "use"}),
    ("EdDSA", "OKP", {"kty", "crv", "x", "kid", "alg", "use"}),
    ("RS256", "RSA", {"kty", "n", "e", "kid", "alg", "use"}),
])
def test_public_jwk_members(keys: dict[str, SigningKey], alg: str, kty: str, members: set[str]) -> None:
    jwk = keys[alg].public_jwk
    assert jwk["kty"] == kty
    assert set(jwk) == members
    if alg == "ES256":
        assert jwk["crv"] == "P-256"
    if alg == "EdDSA":
        assert jwk["crv"] == "Ed25519"


def test_generated_keys_are_distinct() -> None:
    assert SigningKey.generate("ES256").kid != SigningKey.generate("ES256").kid
    assert SigningKey.generate("EdDSA").kid != SigningKey.generate("EdDSA").kid


def test_rsa_keys_are_generated_with_at_least_2048_bits(keys: dict[str, SigningKey]) -> None:
    public_key = keys["RS256"].public_key
    assert isinstance(public_key, rsa.RSAPublicKey)
    assert public_key.key_size >= 2048


def test_repr_holds_no_key_material(keys: dict[str, SigningKey]) -> None:
    for key in keys.values():
        text = repr(key)
        assert key.kid in text
        assert "private_key=" not in text and "public_jwk=" not in text
        for line in body_lines(key.private_pem()):
            assert line[:16] not in text


# -- PEM loading ----------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ALGS)
def test_pem_round_trip(keys: dict[str, SigningKey], alg: str) -> None:
    key = keys[alg]
    loaded = SigningKey.from_pem(key.private_pem(), alg)  # type: ignore[arg-type]
    assert loaded.kid == key.kid
    assert loaded.public_jwk == key.public_jwk
    assert loaded.private_key is not None


@pytest.mark.parametrize("alg", ALGS)
def test_encrypted_pem_with_its_passphrase(keys: dict[str, SigningKey], alg: str) -> None:
    key = keys[alg]
    pem = key.private_pem("correct horse battery staple")
    assert b"ENCRYPTED" in pem
    assert SigningKey.from_pem(pem, alg, "correct horse battery staple").kid == key.kid  # type: ignore[arg-type]


def test_traditional_openssl_pem_loads(keys: dict[str, SigningKey]) -> None:
    key = keys["ES256"]
    pem = pem_of(key.private_key, fmt=serialization.PrivateFormat.TraditionalOpenSSL)
    assert b"BEGIN EC PRIVATE KEY" in pem
    assert SigningKey.from_pem(pem, "ES256").kid == key.kid


@pytest.mark.parametrize("alg", ALGS)
def test_wrong_passphrase_is_refused(keys: dict[str, SigningKey], alg: str) -> None:
    pem = keys[alg].private_pem("the right one")
    with pytest.raises(KeyMaterialError) as info:
        SigningKey.from_pem(pem, alg, "the-wrong-one")  # type: ignore[arg-type]
    assert "passphrase" in str(info.value)
    assert_safe_message(info.value, pem, "the-wrong-one")


def test_missing_passphrase_is_refused(keys: dict[str, SigningKey]) -> None:
    pem = keys["ES256"].private_pem("the right one")
    with pytest.raises(KeyMaterialError) as info:
        SigningKey.from_pem(pem, "ES256")
    assert "encrypted" in str(info.value)
    assert_safe_message(info.value, pem)


def test_passphrase_for_an_unencrypted_key_is_refused(keys: dict[str, SigningKey]) -> None:
    pem = keys["ES256"].private_pem()
    with pytest.raises(KeyMaterialError) as info:
        SigningKey.from_pem(pem, "ES256", "unneeded passphrase")
    assert "not encrypted" in str(info.value)
    assert_safe_message(info.value, pem, "unneeded passphrase")


@pytest.mark.parametrize("pem", [
    b"",
    b"not a pem at all",
    b"-----BEGIN PRIVATE KEY-----\nMIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEA\n-----END PRIVATE KEY-----\n",
    b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
], ids=["empty", "text", "truncated", "certificate"])
def test_not_a_private_key_is_refused(pem: bytes) -> None:
    with pytest.raises(KeyMaterialError) as info:
        SigningKey.from_pem(pem, "ES256")
    assert_safe_message(info.value, pem)


def test_a_public_key_pem_is_refused(keys: dict[str, SigningKey]) -> None:
    public_pem = keys["ES256"].public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(KeyMaterialError) as info:
        SigningKey.from_pem(public_pem, "ES256")
    assert_safe_message(info.value, public_pem)


def wrong_type_cases() -> list[tuple[str, object, str]]:
    return [
        ("ed25519-for-es256", ed25519.Ed25519PrivateKey.generate(), "ES256"),
        ("p384-for-es256", ec.generate_private_key(ec.SECP384R1()), "ES256"),
        ("p521-for-es256", ec.generate_private_key(ec.SECP521R1()), "ES256"),
        ("secp256k1-for-es256", ec.generate_private_key(ec.SECP256K1()), "ES256"),
        ("rsa-for-es256", rsa.generate_private_key(65537, 2048), "ES256"),
        ("p256-for-eddsa", ec.generate_private_key(ec.SECP256R1()), "EdDSA"),
        ("ed448-for-eddsa", ed448.Ed448PrivateKey.generate(), "EdDSA"),
        ("x25519-for-eddsa", x25519.X25519PrivateKey.generate(), "EdDSA"),
        ("p256-for-rs256", ec.generate_private_key(ec.SECP256R1()), "RS256"),
        ("ed25519-for-rs256", ed25519.Ed25519PrivateKey.generate(), "RS256"),
        ("rsa1024-for-rs256", rsa.generate_private_key(65537, 1024), "RS256"),
    ]


@pytest.mark.parametrize(("name", "private_key", "alg"), wrong_type_cases(), ids=[case[0] for case in wrong_type_cases()])
def test_key_of_the_wrong_type_is_refused(name: str, private_key: object, alg: str) -> None:
    pem = pem_of(private_key)
    with pytest.raises(KeyMaterialError) as info:
        SigningKey.from_pem(pem, alg)  # type: ignore[arg-type]
    assert alg in str(info.value)
    assert_safe_message(info.value, pem)
    with pytest.raises(KeyMaterialError):
        SigningKey.from_private_key(private_key, alg)  # type: ignore[arg-type]


def test_encrypted_key_of_the_wrong_type_is_refused_with_its_passphrase() -> None:
    pem = pem_of(ed25519.Ed25519PrivateKey.generate(), b"pass phrase")
    with pytest.raises(KeyMaterialError) as info:
        SigningKey.from_pem(pem, "ES256", "pass phrase")
    assert_safe_message(info.value, pem, "pass phrase")


def test_rsa_2048_is_accepted_for_rs256() -> None:
    private_key = rsa.generate_private_key(65537, 2048)
    assert SigningKey.from_pem(pem_of(private_key), "RS256").alg == "RS256"


def test_a_key_without_its_private_half_cannot_export_one(keys: dict[str, SigningKey]) -> None:
    key = keys["ES256"]
    public_only = SigningKey(kid=key.kid, alg=key.alg, public_key=key.public_key, public_jwk=key.public_jwk)
    with pytest.raises(KeyMaterialError):
        public_only.private_pem()


# -- key ring -------------------------------------------------------------------------------------


def test_single_ring_signs_and_verifies_with_its_key(keys: dict[str, SigningKey]) -> None:
    key = keys["ES256"]
    ring = KeyRing.single(key)
    assert ring.signing is key
    assert ring.get(key.kid) is key
    assert ring.get("no-such-kid") is None
    assert ring.get("") is None


def test_ring_get_finds_every_key(keys: dict[str, SigningKey]) -> None:
    ring = KeyRing(keys=tuple(keys.values()), signing_kid=keys["EdDSA"].kid)
    for key in keys.values():
        assert ring.get(key.kid) is key
    assert ring.signing is keys["EdDSA"]


def test_ring_without_a_signing_key(keys: dict[str, SigningKey]) -> None:
    assert KeyRing(keys=tuple(keys.values()), signing_kid=None).signing is None
    assert KeyRing(keys=(keys["ES256"],), signing_kid=keys["RS256"].kid).signing is None
    assert KeyRing(keys=(), signing_kid=None).jwks() == {"keys": []}


def test_jwks_lists_public_keys_and_honours_exclude(keys: dict[str, SigningKey]) -> None:
    ring = KeyRing(keys=tuple(keys.values()), signing_kid=keys["ES256"].kid)
    jwks = ring.jwks()
    assert [jwk["kid"] for jwk in jwks["keys"]] == [key.kid for key in keys.values()]
    for jwk in jwks["keys"]:
        assert not set(PRIVATE_MEMBERS) & set(jwk)
        assert jwk["use"] == "sig"
    excluded = ring.jwks(exclude=frozenset({keys["RS256"].kid, "unknown"}))
    assert [jwk["kid"] for jwk in excluded["keys"]] == [keys["ES256"].kid, keys["EdDSA"].kid]


def test_jwks_returns_copies(keys: dict[str, SigningKey]) -> None:
    ring = KeyRing.single(keys["ES256"])
    ring.jwks()["keys"][0]["d"] = "oops"
    assert "d" not in ring.jwks()["keys"][0]
    assert "d" not in keys["ES256"].public_jwk
