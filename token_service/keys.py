"""Signing keys and the key ring: one key signs, every key in the ring verifies.

Each SigningKey binds its algorithm to its key material (RFC 8725 §3.1): verification never takes the
algorithm from a token. ``kid`` is the RFC 7638 JWK thumbprint of the public key. JWKs are built from
public keys only, so a private parameter can never be published.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from jwt.exceptions import InvalidKeyError

Algorithm = Literal["ES256", "EdDSA", "RS256"]
PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey

# RFC 7638 §3.2: the required members of each key type, in lexicographic order.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x"), "RSA": ("e", "kty", "n")}


class KeyMaterialError(ValueError):
    """A key file or key does not fit the configured algorithm (message is safe to print)."""


def _public_jwk(public_key: PublicKey) -> dict[str, Any]:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return dict(ECAlgorithm.to_jwk(public_key, as_dict=True))
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return dict(OKPAlgorithm.to_jwk(public_key, as_dict=True))
    return dict(RSAAlgorithm.to_jwk(public_key, as_dict=True))


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url without padding)."""
    members = {name: jwk[name] for name in _THUMBPRINT_MEMBERS[jwk["kty"]]}
    digest = hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _check_fits(private_key: object, alg: Algorithm) -> PrivateKey:
    if alg == "ES256" and isinstance(private_key, ec.EllipticCurvePrivateKey) and isinstance(private_key.curve, ec.SECP256R1):
        return private_key
    if alg == "EdDSA" and isinstance(private_key, ed25519.Ed25519PrivateKey):
        return private_key
    if alg == "RS256" and isinstance(private_key, rsa.RSAPrivateKey):
        if private_key.key_size < 2048:
            raise KeyMaterialError("an RS256 key must have at least 2048 bits")
        return private_key
    wanted = {"ES256": "an EC P-256", "EdDSA": "an Ed25519", "RS256": "an RSA"}[alg]
    raise KeyMaterialError(f"the key is not {wanted} private key, as {alg} needs")


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One key of the ring: its algorithm, its public half, and (when this process may sign) its private half."""

    kid: str
    alg: Algorithm
    public_key: PublicKey = field(repr=False)
    private_key: PrivateKey | None = field(default=None, repr=False, compare=False)
    public_jwk: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_private_key(cls, private_key: object, alg: Algorithm) -> SigningKey:
        """Wrap a loaded private key, checking it fits ``alg``."""
        key = _check_fits(private_key, alg)
        public_key = key.public_key()
        jwk = _public_jwk(public_key)
        jwk.pop("key_ops", None)
        kid = thumbprint(jwk)
        jwk.update({"kid": kid, "alg": alg, "use": "sig"})
        return cls(kid=kid, alg=alg, public_key=public_key, private_key=key, public_jwk=jwk)

    @classmethod
    def from_public_jwk(cls, jwk: dict[str, Any]) -> SigningKey:
        """A verify-only key from a published JWK (as this service's JWKS serves them); KeyMaterialError when
        the JWK lacks a ``kid``, names another algorithm than the three this service signs with, carries a
        private parameter, is not for signatures, or does not fit its ``alg``."""
        kid, alg = jwk.get("kid"), jwk.get("alg")
        if not isinstance(kid, str) or not kid:
            raise KeyMaterialError("the JWK has no kid")
        if alg not in ("ES256", "EdDSA", "RS256"):
            raise KeyMaterialError("the JWK's alg is not ES256, EdDSA or RS256")
        if jwk.get("use", "sig") != "sig" or _PRIVATE_MEMBERS & jwk.keys():
            raise KeyMaterialError("the JWK is not a public signature key")
        try:
            if alg == "ES256":
                public: object = ECAlgorithm.from_jwk(jwk)
                fits = isinstance(public, ec.EllipticCurvePublicKey) and isinstance(public.curve, ec.SECP256R1)
            elif alg == "EdDSA":
                public = OKPAlgorithm.from_jwk(jwk)
                fits = isinstance(public, ed25519.Ed25519PublicKey)
            else:
                public = RSAAlgorithm.from_jwk(jwk)
                fits = isinstance(public, rsa.RSAPublicKey) and public.key_size >= 2048
        except (InvalidKeyError, KeyError, TypeError, ValueError):
            raise KeyMaterialError("the JWK is not a valid public key") from None
        if not fits:
            raise KeyMaterialError(f"the JWK's key does not fit {alg}")
        published = {k: v for k, v in jwk.items() if k != "key_ops"}
        return cls(kid=kid, alg=alg, public_key=public, public_jwk=published)  # type: ignore[arg-type]

    @classmethod
    def generate(cls, alg: Algorithm) -> SigningKey:
        """A fresh key for ``alg`` (P-256, Ed25519 or RSA-3072)."""
        private_key: PrivateKey
        if alg == "ES256":
            private_key = ec.generate_private_key(ec.SECP256R1())
        elif alg == "EdDSA":
            private_key = ed25519.Ed25519PrivateKey.generate()
        else:
            private_key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
        return cls.from_private_key(private_key, alg)

    @classmethod
    def from_pem(cls, pem: bytes, alg: Algorithm, passphrase: str | None = None) -> SigningKey:
        """Load a PEM private key (optionally encrypted); raise KeyMaterialError with a printable reason."""
        try:
            private_key = serialization.load_pem_private_key(pem, password=passphrase.encode() if passphrase else None)
        except TypeError as exc:
            if "not given" in str(exc).lower():
                raise KeyMaterialError("the key file is encrypted: set its passphrase") from None
            raise KeyMaterialError("a passphrase was given but the key file is not encrypted") from None
        except ValueError:
            if passphrase:
                raise KeyMaterialError("the key file is not a PEM private key, or the passphrase is wrong") from None
            raise KeyMaterialError("the key file is not a PEM private key") from None
        except UnsupportedAlgorithm:
            raise KeyMaterialError("the key file holds a key of an unsupported type") from None
        return cls.from_private_key(private_key, alg)

    def private_pem(self, passphrase: str | None = None) -> bytes:
        """The private key as PKCS#8 PEM (encrypted when a passphrase is given); for tests and tools."""
        if self.private_key is None:
            raise KeyMaterialError("this key has no private half")
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase.encode()) if passphrase else serialization.NoEncryption()
        )
        return self.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


@dataclass(frozen=True, slots=True)
class KeyRing:
    """The keys this process knows: ``signing`` signs new tokens, every key in ``keys`` verifies.

    A ring is a value: a rotation builds a new ring, it never mutates this one.
    """

    keys: tuple[SigningKey, ...]
    signing_kid: str | None

    @classmethod
    def single(cls, key: SigningKey) -> KeyRing:
        """A static ring of one key that both signs and verifies."""
        return cls(keys=(key,), signing_kid=key.kid)

    @classmethod
    def from_jwks(cls, document: object) -> KeyRing:
        """A verify-only ring (no signing key) from a JWK Set; members that are not usable public signature
        keys are skipped. KeyMaterialError when the document is not a JWK Set."""
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise KeyMaterialError("the document is not a JWK Set")
        keys: list[SigningKey] = []
        for member in document["keys"]:
            if not isinstance(member, dict):
                continue
            try:
                keys.append(SigningKey.from_public_jwk(member))
            except KeyMaterialError:
                continue
        return cls(keys=tuple(keys), signing_kid=None)

    def get(self, kid: str) -> SigningKey | None:
        """The key with this kid, or None; the kid is only ever looked up here."""
        for key in self.keys:
            if key.kid == kid:
                return key
        return None

    @property
    def signing(self) -> SigningKey | None:
        """The key that signs new tokens, or None when no key may sign."""
        return self.get(self.signing_kid) if self.signing_kid else None

    def jwks(self, exclude: frozenset[str] = frozenset()) -> dict[str, list[dict[str, Any]]]:
        """RFC 7517 JWK Set of the public keys, without those in ``exclude`` (revoked kids)."""
        return {"keys": [dict(key.public_jwk) for key in self.keys if key.kid not in exclude]}
