"""Where the key ring comes from: a static ring (one mounted key, or a key generated for the embedded
default) or the managed ring (shared through the store, private keys sealed under the KEK, staged
rotation on a schedule and on demand, an immediate successor when the signing key is revoked).

The verify path only calls ``ring()``: a cached value, re-read from the store at most every
``TOKEN_SERVICE_SIGNING_KEY_REFRESH`` seconds (statuses are derived from stored times, so an activation takes effect on every
instance at the same moment without a store read).
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from cryptography.hazmat.primitives import serialization

from token_service import ring as rules
from token_service.clock import Clock
from token_service.errors import Conflict
from token_service.keys import Algorithm, KeyMaterialError, KeyRing, SigningKey
from token_service.sealing import seal, unseal
from token_service.stores.base import SigningKeyStore, StoredSigningKey, StoreUnavailable

log = logging.getLogger("token_service.signing")
REFRESH_SECONDS = 5.0
FORCED_REFRESH_GAP = 1.0
PURPOSE = "signing-key"


class SigningKeys(Protocol):
    """The source of the key ring."""

    managed: bool

    def ring(self) -> KeyRing:
        """The ring at this moment (cheap; may be up to a few seconds behind the store)."""

    def refresh(self, force: bool = False) -> KeyRing:
        """Re-read the ring now (at most once a second unless ``force``); for an unknown kid or a revoked signer."""

    def ensure_signer(self) -> bool:
        """Make sure a key signs now, repairing the ring if it can; False when it cannot (static rings)."""

    def states(self, fresh: bool = False) -> list[rules.KeyState]:
        """Every key of the ring with its status, for the operator (``fresh``: re-read from the store first)."""

    def max_age(self, configured: int) -> int:
        """The JWKS max-age to send now."""

    def rotate(self) -> rules.KeyState:
        """Stage a new key (status ``next``); Conflict when this ring cannot rotate."""

    def revoke(self, kid: str) -> None:
        """Take a key out of service; when it was signing, a successor signs at once."""


class StaticKeys:
    """A ring of one key that never changes: a mounted PEM file, or a key generated at start-up."""

    managed = False

    def __init__(self, key: SigningKey, loaded_at: int):
        self._ring = KeyRing.single(key)
        self._times = rules.KeyTimes(key.kid, key.alg, loaded_at, loaded_at)

    def ring(self) -> KeyRing:
        """See SigningKeys.ring."""
        return self._ring

    def refresh(self, force: bool = False) -> KeyRing:
        """See SigningKeys.refresh."""
        return self._ring

    def ensure_signer(self) -> bool:
        """See SigningKeys.ensure_signer: a static ring cannot repair itself."""
        return False

    def states(self, fresh: bool = False) -> list[rules.KeyState]:
        """See SigningKeys.states."""
        return [rules.KeyState(self._times, "current", None, None)]

    def max_age(self, configured: int) -> int:
        """See SigningKeys.max_age."""
        return configured

    def rotate(self) -> rules.KeyState:
        """See SigningKeys.rotate: a static key cannot rotate."""
        raise Conflict(
            "Rotation needs a managed key ring: set TOKEN_SERVICE_KEY_ENCRYPTION_KEY (and TOKEN_SERVICE_REDIS_URL for "
            "several instances); with only TOKEN_SERVICE_SIGNING_KEY_FILE, replace the file and restart."
        )

    def revoke(self, kid: str) -> None:
        """See SigningKeys.revoke: the revocation entry refuses its tokens; minting then answers 503."""


def _private_der(key: SigningKey) -> bytes:
    assert key.private_key is not None  # noqa: S101 - managed keys are generated or loaded with their private half
    return key.private_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


class _ReloadingRing:
    """What the managed and directory rings share: a forced re-read at most once a second, and the
    JWKS max-age derived from the ring's next stage change."""

    _clock: Clock
    _forced_at: float

    def _load(self) -> None:
        raise NotImplementedError

    def ring(self) -> KeyRing:
        raise NotImplementedError

    def states(self, fresh: bool = False) -> list[rules.KeyState]:
        raise NotImplementedError

    def refresh(self, force: bool = False) -> KeyRing:
        """See SigningKeys.refresh."""
        now = self._clock()
        if force or now - self._forced_at >= FORCED_REFRESH_GAP:
            self._forced_at = now
            self._load()
        return self.ring()

    def max_age(self, configured: int) -> int:
        """See SigningKeys.max_age."""
        return rules.jwks_max_age(configured, self.states(), self._clock())


class ManagedKeys(_ReloadingRing):
    """The shared, rotating ring."""

    managed = True

    def __init__(self, store: SigningKeyStore, kek: bytes, alg: Algorithm, clock: Clock, horizon: int,
                 activation_delay: int, rotation_period: int | None, seed: SigningKey | None = None,
                 revoked: Callable[[list[str]], dict[str, int]] = lambda kids: {},
                 generate: Callable[[Algorithm], SigningKey] = SigningKey.generate, refresh_seconds: float = REFRESH_SECONDS):
        self._store = store
        self._kek = kek
        self._alg = alg
        self._clock = clock
        self._horizon = horizon
        self._delay = activation_delay
        self._period = rotation_period
        self._generate = generate
        self._refresh_seconds = refresh_seconds
        self._revoked = revoked
        self._lock = threading.Lock()
        self._stored: list[StoredSigningKey] = []
        self._opened: dict[str, SigningKey] = {}
        self._loaded_at = -1e18
        self._forced_at = -1e18
        self._cached: tuple[frozenset[tuple[str, str]], KeyRing] | None = None
        self.on_stage: Callable[[str, str], None] | None = None
        """Called once per deployment when a key becomes current, starts retiring or leaves the ring."""
        self._bootstrap(seed)

    # -- reading --------------------------------------------------------------------------------

    def _bootstrap(self, seed: SigningKey | None) -> None:
        self._load()
        if self._stored:
            return
        if seed is not None and self._revoked([seed.kid]):
            log.warning("the mounted key %s has been revoked: the managed ring starts with a new key instead", seed.kid)
            seed = None
        for _ in range(50):
            if self.ensure_signer(seed):
                return
            time.sleep(0.1)  # another instance holds the lock: it is creating the first key
        log.error("the managed key ring has no signing key yet; minting answers 503 until one is added")

    def _load(self) -> None:
        stored = self._store.all()
        for entry in stored:
            if entry.times.kid not in self._opened:
                self._opened[entry.times.kid] = self._open(entry)
        with self._lock:
            self._stored = stored
            self._loaded_at = self._clock()

    def _open(self, entry: StoredSigningKey) -> SigningKey:
        der = unseal(entry.sealed_private, self._kek, PURPOSE, entry.times.kid)
        if der is None:
            raise RuntimeError(f"signing key {entry.times.kid} does not open under this TOKEN_SERVICE_KEY_ENCRYPTION_KEY")
        private_key = serialization.load_der_private_key(der, password=None)
        key = SigningKey.from_private_key(private_key, entry.times.alg)  # type: ignore[arg-type]
        if key.kid != entry.times.kid:
            raise RuntimeError(f"signing key {entry.times.kid} does not match its kid")
        return key

    def states(self, fresh: bool = False) -> list[rules.KeyState]:
        """See SigningKeys.states."""
        now = self._clock()
        if fresh or now - self._loaded_at > self._refresh_seconds:
            self._load()
            self._tick(now)
        return rules.states([e.times for e in self._stored], now, self._horizon)

    def ring(self) -> KeyRing:
        """See SigningKeys.ring."""
        current = self.states()
        signing = rules.signing_kid(current)
        shape = frozenset((s.times.kid, s.status) for s in current)
        cached = self._cached
        if cached is not None and cached[0] == shape:
            return cached[1]
        keys = tuple(self._opened[s.times.kid] for s in current)
        built = KeyRing(keys=keys, signing_kid=signing)
        previous = self._cached
        self._cached = (shape, built)
        if previous is not None:
            self._report_stages(previous[0], shape)
        return built

    def _report_stages(self, before: frozenset[tuple[str, str]], after: frozenset[tuple[str, str]]) -> None:
        """Audit each stage change once for the whole deployment: the first instance to see it takes a lock."""
        if self.on_stage is None:
            return
        left = {kid for kid, _ in before} - {kid for kid, _ in after}
        changes = sorted(after - before) + [(kid, "removed") for kid in sorted(left)]
        for kid, status in changes:
            if status in ("next", "revoked"):
                continue  # recorded by the operation that caused them (signing_key.rotate, signing_key.revoke)
            try:
                if self._store.acquire(f"stage:{kid}:{status}", self._horizon + 60):
                    self.on_stage(kid, status)
            except StoreUnavailable:
                log.warning("stage change of %s to %s not audited: the store cannot be reached", kid, status)


    # -- changing -------------------------------------------------------------------------------

    def _add(self, key: SigningKey, created_at: int, activates_at: int) -> rules.KeyState:
        times = rules.KeyTimes(key.kid, key.alg, created_at, activates_at)
        self._store.add(StoredSigningKey(times, seal(_private_der(key), self._kek, PURPOSE, key.kid)))
        self._opened[key.kid] = key
        self._load()
        return next(s for s in rules.states([e.times for e in self._stored], self._clock(), self._horizon) if s.times.kid == key.kid)

    def _now_states(self) -> list[rules.KeyState]:
        return rules.states([e.times for e in self._stored], self._clock(), self._horizon)

    def rotate(self) -> rules.KeyState:
        """See SigningKeys.rotate: the new key signs after the activation delay. One rotation at a time
        across the deployment (a short lock, then the check for a staged key on fresh data)."""
        if not self._store.acquire("ring-change", 10):
            raise Conflict("Another change of the signing-key ring is in progress; retry in a few seconds.")
        try:
            self._load()
            if any(s.status == "next" for s in self._now_states()):
                raise Conflict("A rotation is already staged: its key is listed with status next.")
            now = self._clock()
            # Rounded up: a key staged at N.9 s must not sign before the whole delay has passed.
            return self._add(self._generate(self._alg), int(now), math.ceil(now) + self._delay)
        finally:
            self._store.release("ring-change")

    def _tick(self, now: float) -> None:
        """Scheduled rotation: one instance stages the next key when it is due."""
        if rules.rotation_due(self._now_states(), now, self._period):
            try:
                state = self.rotate()
                log.warning("scheduled rotation staged key %s; it signs from %d", state.times.kid, state.times.activates_at)
            except Conflict:
                pass

    def ensure_signer(self, seed: SigningKey | None = None) -> bool:  # noqa: D417
        """Make sure a key signs now: promote the earliest staged key, or add ``seed`` or a fresh key that
        signs at once. Idempotent and serialised across the deployment; False when another instance
        holds the lock (it is doing the same)."""
        if not self._store.acquire("ring-change", 10):
            return False
        try:
            self._load()
            current = self._now_states()
            if rules.signing_kid(current) is not None:
                return True
            now = int(self._clock())
            staged = sorted((s for s in current if s.status == "next"), key=lambda s: s.times.activates_at)
            if staged:
                self._store.update(staged[0].times.kid, activates_at=now)
                self._load()
                log.warning("the managed key ring had no signing key: the staged key %s signs from now", staged[0].times.kid)
            else:
                key = seed or self._generate(self._alg)
                self._add(key, now, now)
                log.warning("the managed key ring had no signing key: %s %s signs from now",
                            "the mounted key" if seed is not None else "a new key", key.kid)
            return True
        finally:
            self._store.release("ring-change")

    def revoke(self, kid: str) -> None:
        """See SigningKeys.revoke: mark it revoked, then make sure a key signs (a staged key is promoted,
        or a fresh key signs at once). Safe to repeat after a partial failure."""
        self._store.update(kid, revoked_at=int(self._clock()))
        self._load()
        for _ in range(50):
            if self.ensure_signer():
                return
            time.sleep(0.1)


class DirectoryKeys(_ReloadingRing):
    """A ring from a mounted directory (a Kubernetes secret, a config volume): every ``<T>.pem`` or
    ``<T>-<label>.pem`` file is a key that activates at Unix time ``T``. The same rules as the managed
    ring apply: a file whose time is ahead is ``next`` (published, not signing), the latest activated
    one signs, earlier ones retire; the operator deletes a file once its key has left the JWKS. The
    directory is re-read every few seconds, so adding a file needs no restart; revoked kids come from
    the revocation store."""

    managed = True  # the ring changes at run time: re-read it on an unknown kid or a revoked signer

    def __init__(self, directory: str, alg: Algorithm, passphrase: str | None, clock: Clock, horizon: int,
                 revoked: Callable[[list[str]], dict[str, int]], refresh_seconds: float = REFRESH_SECONDS):
        self._dir = directory
        self._alg = alg
        self._passphrase = passphrase
        self._clock = clock
        self._horizon = horizon
        self._revoked_lookup = revoked
        self._refresh_seconds = refresh_seconds
        self._files: dict[tuple[str, float], tuple[rules.KeyTimes, SigningKey]] = {}
        self._times: list[rules.KeyTimes] = []
        self._loaded_at = -1e18
        self._forced_at = -1e18
        self._load(strict=True)

    def _load(self, strict: bool = False) -> None:
        found: dict[tuple[str, float], tuple[rules.KeyTimes, SigningKey]] = {}
        try:
            entries = sorted(os.scandir(self._dir), key=lambda e: e.name)
        except OSError as exc:
            if strict:
                raise RuntimeError(f"cannot read {self._dir!r} ({exc.strerror})") from None
            log.error("signing key directory %s cannot be read; keeping the ring as it was", self._dir)
            return
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_file():
                continue  # Kubernetes' ..data links and hidden files
            match = re.fullmatch(r"([0-9]{1,12})(-[A-Za-z0-9._-]{1,64})?\.pem", entry.name)
            if match is None:
                if strict:
                    raise RuntimeError(f"{entry.name!r} is not named <unix time>[-label].pem")
                continue
            stamp = (entry.name, entry.stat().st_mtime)
            if stamp in self._files:
                found[stamp] = self._files[stamp]
                continue
            try:
                with open(entry.path, "rb") as fh:
                    key = SigningKey.from_pem(fh.read(), self._alg, self._passphrase)
            except (OSError, KeyMaterialError) as exc:
                if strict:
                    raise RuntimeError(f"{entry.name}: {exc}") from None
                log.error("signing key file %s is unusable and is ignored", entry.name)
                continue
            activates = int(match.group(1))
            found[stamp] = (rules.KeyTimes(key.kid, key.alg, activates, activates), key)
        if strict and not found:
            raise RuntimeError(f"{self._dir!r} holds no <unix time>[-label].pem key")
        kids = [times.kid for times, _ in found.values()]
        try:
            revoked = self._revoked_lookup(kids) if kids else {}
        except StoreUnavailable:
            if strict:
                raise
            revoked = {t.kid: t.revoked_at for t in self._times if t.revoked_at is not None}
        self._files = found
        self._times = [replace(times, revoked_at=revoked.get(times.kid)) for times, _ in found.values()]
        self._loaded_at = self._clock()

    def states(self, fresh: bool = False) -> list[rules.KeyState]:
        """See SigningKeys.states."""
        now = self._clock()
        if fresh or now - self._loaded_at > self._refresh_seconds:
            self._load()
        return rules.states(self._times, now, self._horizon)

    def ring(self) -> KeyRing:
        """See SigningKeys.ring."""
        current = self.states()
        by_kid = {times.kid: key for times, key in self._files.values()}
        return KeyRing(keys=tuple(by_kid[s.times.kid] for s in current), signing_kid=rules.signing_kid(current))


    def rotate(self) -> rules.KeyState:
        """See SigningKeys.rotate: the directory is the operator's to change."""
        raise Conflict(
            "This ring is a mounted directory: add a key file named <unix time>.pem (at least the activation delay "
            "ahead) to every instance's TOKEN_SERVICE_SIGNING_KEY_DIR; it is picked up without a restart."
        )

    def ensure_signer(self) -> bool:
        """See SigningKeys.ensure_signer: the directory is the operator's to change."""
        return False

    def revoke(self, kid: str) -> None:
        """See SigningKeys.revoke: the revocation entry is already stored; re-read so the next file signs."""
        self._forced_at = -1e18
        self.refresh()
