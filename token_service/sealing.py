"""Sealing secrets under the key-encryption key (KEK): AES-256-GCM with a random 96-bit nonce.

Each purpose derives its own AES key from the KEK (so a sealed API key can never be opened as a
signing key), and each sealed value is bound to its record by associated data (a key id or kid).
"""

from __future__ import annotations

import hashlib
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def _aes_key(key_encryption_key: bytes, purpose: str) -> bytes:
    # The KEK may be longer than 32 bytes; derive the AES key so that every byte of it counts.
    return hashlib.sha256(f"token-service {purpose} seal v1\0".encode() + key_encryption_key).digest()


def seal(plaintext: bytes, key_encryption_key: bytes, purpose: str, bound_to: str) -> bytes:
    """``plaintext`` encrypted for ``purpose``, bound to ``bound_to`` (nonce || ciphertext || tag)."""
    nonce = secrets.token_bytes(12)
    return nonce + AESGCM(_aes_key(key_encryption_key, purpose)).encrypt(nonce, plaintext, bound_to.encode())


def unseal(sealed: bytes, key_encryption_key: bytes, purpose: str, bound_to: str) -> bytes | None:
    """The plaintext, or None when it does not open (another KEK, purpose or record, or tampered)."""
    try:
        return AESGCM(_aes_key(key_encryption_key, purpose)).decrypt(sealed[:12], sealed[12:], bound_to.encode())
    except (InvalidTag, ValueError):
        return None
