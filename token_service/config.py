"""Settings: read once from ``TOKEN_SERVICE_*`` (and an optional TOML file), validated, frozen.

``load_settings(environ)`` is the only reader of the environment. A wrong value raises ConfigError
with one line naming the setting and what is allowed; ``wsgi.py`` and the CLI print that line and
exit. The TOML file (``TOKEN_SERVICE_CONFIG``) uses the same names in lower case without the prefix
(``max_ttl = 600``); the environment wins over the file.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

PREFIX = "TOKEN_SERVICE_"


class ConfigError(Exception):
    """A setting is wrong: start-up stops with this one-line message."""


ALGORITHMS = ("ES256", "EdDSA", "RS256")
SCOPE_RE = re.compile(r"^[!#-\[\]-~]{1,64}\Z")  # RFC 6749 scope-token: visible ASCII but " and \; \Z: no trailing newline
ORIGIN_RE = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?\Z")
RATE_RE = re.compile(r"^\s*[0-9]+\s*(/|per)\s*([0-9]+\s*)?(second|minute|hour|day)s?\s*$")
ADAPTERS_RE = re.compile(r"^([a-z][a-z0-9_]*|[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*)\Z")  # a name or package.module:Class
CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}\Z")
CLAIM_RE = re.compile(r"^[A-Za-z0-9._:/-]{1,128}\Z")
OIDC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
SESSION_FORWARD = ("cookie", "authorization")


@dataclass(frozen=True, slots=True)
class Grant:
    """What membership of one identity-provider group allows: personas and scopes."""

    group: str
    personas: tuple[str, ...]
    scopes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of the service; see the README's table for what each one does."""

    redis_url: str | None = None
    redis_connect_timeout: float = 0.5
    redis_socket_timeout: float = 0.5
    redis_max_connections: int = 50
    redis_wait_replicas: int = 0
    redis_wait_timeout: int = 500
    admin_key: str | None = field(default=None, repr=False)
    issuer: str = "http://localhost:8000"
    audience: str = "persona-api"
    signing_alg: str = "ES256"
    signing_key_file: str | None = None
    signing_key_dir: str | None = None
    signing_key_passphrase: str | None = field(default=None, repr=False)
    signing_key_rotation: int | None = 90 * 86400
    signing_key_activation_delay: int | None = None
    signing_key_refresh: float = 5.0
    key_encryption_key: bytes | None = field(default=None, repr=False)
    max_ttl: int = 900
    clock_skew: int = 30
    verify_cache_size: int = 10000
    scopes: tuple[str, ...] = ("chat:read", "chat:write")
    default_scopes: tuple[str, ...] = ("chat:read", "chat:write")
    cors_origins: tuple[str, ...] = ()
    trusted_proxies: int = 0
    metrics: bool | str = True
    """True: /metrics on the app; False: no metrics at all; "host:port": served by a listener of its own."""
    jwks_max_age: int = 300
    signature_window: int = 300
    rate_limit_public_mint: str = "30/minute"
    rate_limit_secret_mint: str = "6000/minute"
    rate_limit_failed_auth: str = "20/minute"
    rate_limit_admin: str = "120/minute"
    revoke_keys_from_browsers: bool = True
    auth_adapters: tuple[str, ...] = ("api_key",)
    subject_pepper: bytes | None = field(default=None, repr=False)
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_jwks_url: str | None = None
    oidc_algorithms: tuple[str, ...] = ("RS256", "ES256")
    oidc_subject_claim: str = "sub"
    oidc_personas: tuple[str, ...] = ()
    oidc_scopes: tuple[str, ...] | None = None
    oidc_groups_claim: str | None = None
    oidc_group_grants: tuple[Grant, ...] = ()
    oidc_jwks_refresh_interval: float = 60.0
    oidc_jwks_cache_seconds: int = 300
    oidc_timeout: float = 2.0
    oidc_client_id: str = "oidc"
    session_url: str | None = None
    session_timeout: float = 2.0
    session_forward: tuple[str, ...] = ("cookie",)
    session_subject_field: str = "sub"
    session_personas_field: str | None = None
    session_scopes_field: str | None = None
    session_personas: tuple[str, ...] = ()
    session_scopes: tuple[str, ...] | None = None
    session_cache_seconds: int = 0
    session_client_id: str = "session"
    adapter_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    audit_retention: int = 90 * 86400
    audit_max_records: int = 250_000
    audit_refusals_per_minute: int = 10
    log_level: str = "INFO"
    log_format: str | None = None
    """``json`` or ``text``; None: text on the embedded stores (a developer's terminal), JSON with Redis."""
    log_client_address: str = "truncated"
    """``full``, ``truncated`` (IPv4 /24, IPv6 /48) or ``off``: the client address in the request log."""
    config: str | None = None

    @property
    def embedded(self) -> bool:
        """True when the service runs on its embedded single-process stores."""
        return self.redis_url is None

    @property
    def log_json(self) -> bool:
        """True when log lines are JSON: TOKEN_SERVICE_LOG_FORMAT, by default JSON unless on the embedded stores."""
        return self.log_format == "json" if self.log_format is not None else not self.embedded

    @property
    def metrics_listener(self) -> tuple[str, int] | None:
        """(host, port) of the separate metrics listener when TOKEN_SERVICE_METRICS is host:port, else None."""
        if not isinstance(self.metrics, str):
            return None
        host, _, port = self.metrics.rpartition(":")
        return host.strip("[]"), int(port)

    @property
    def activation_delay(self) -> int:
        """Seconds between staging a key and its signing: the setting, or twice the JWKS max-age (at least the
        max-age plus the ring's refresh interval)."""
        if self.signing_key_activation_delay is not None:
            return self.signing_key_activation_delay
        return max(2 * self.jwks_max_age, self.jwks_max_age + math.ceil(self.signing_key_refresh))

    @property
    def revocation_horizon(self) -> int:
        """Seconds after which no token issued before a moment can still pass verification."""
        return self.max_ttl + self.clock_skew


_TABLE_SETTINGS = frozenset({"oidc_group_grants", "adapter_options"})  # TOML tables; JSON in the environment
# Settings that may be given as ``…_FILE`` (a mounted secret): the secrets, and the Redis URL, which may hold a password.
_SECRET_SETTINGS = ("admin_key", "signing_key_passphrase", "key_encryption_key", "subject_pepper", "redis_url")


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("on", "true", "1", "yes"):
        return True
    if value in ("off", "false", "0", "no"):
        return False
    raise ConfigError(f"{PREFIX}{name.upper()} must be on or off, not {raw!r}")


def _int(name: str, raw: str, low: int, high: int) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{PREFIX}{name.upper()} must be a whole number from {low} to {high}") from None
    if not low <= value <= high:
        raise ConfigError(f"{PREFIX}{name.upper()} must be from {low} to {high}, not {value}")
    return value


def _seconds(name: str, raw: str, low: float, high: float) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(f"{PREFIX}{name.upper()} must be a number of seconds from {low} to {high}") from None
    if not low <= value <= high:
        raise ConfigError(f"{PREFIX}{name.upper()} must be from {low} to {high} seconds, not {raw.strip()}")
    return value


def _list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _scopes(name: str, raw: str) -> tuple[str, ...]:
    items = _list(raw)
    for item in items:
        if not SCOPE_RE.match(item):
            raise ConfigError(f"{PREFIX}{name.upper()}: {item!r} is not a valid scope (visible ASCII, no quote or backslash)")
    return tuple(dict.fromkeys(items))


def _key_encryption_key(raw: str) -> bytes:
    text = raw.strip()
    decoded: bytes | None = None
    if re.fullmatch(r"[0-9a-fA-F]+", text) and len(text) % 2 == 0:
        decoded = bytes.fromhex(text)
    else:
        try:
            decoded = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_" if "-" in text or "_" in text else None, validate=True)
        except (binascii.Error, ValueError):
            decoded = None
    if decoded is None or len(decoded) < 32:
        raise ConfigError(f"{PREFIX}KEY_ENCRYPTION_KEY must be at least 32 random bytes, given as base64 or hex")
    return decoded


def _read_file_setting(name: str, path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{PREFIX}{name.upper()}_FILE: cannot read {path!r} ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{PREFIX}{name.upper()}_FILE: {path!r} is not UTF-8 text") from None


def _raw_values(environ: Mapping[str, str]) -> dict[str, str]:
    """Merge the TOML file (if named) and the environment into {setting name: raw text}."""
    known = {f.name for f in fields(Settings)}
    file_backed = set(_SECRET_SETTINGS)
    raw: dict[str, str] = {}
    config_path = environ.get(PREFIX + "CONFIG")
    if config_path:
        try:
            with open(config_path, "rb") as fh:
                document: dict[str, Any] = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"{PREFIX}CONFIG: cannot read {config_path!r} ({exc.strerror})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{PREFIX}CONFIG: {config_path!r} is not valid TOML ({exc})") from None
        for key, value in document.items():
            if key == "adapters":
                key = "adapter_options"  # the [adapters.<name>] tables of custom adapters
            base = key[:-5] if key.endswith("_file") and key[:-5] in file_backed else key
            if base not in known or base == "config":
                raise ConfigError(f"{PREFIX}CONFIG: unknown setting {key!r} in {config_path!r}")
            if isinstance(value, bool):
                text = "on" if value else "off"
            elif isinstance(value, list):
                text = ",".join(str(v) for v in value)
            elif isinstance(value, (str, int, float)):
                text = str(value)
            elif isinstance(value, dict) and base in _TABLE_SETTINGS:
                text = json.dumps(value)
            else:
                raise ConfigError(f"{PREFIX}CONFIG: setting {key!r} has an unsupported type")
            raw[key] = text
        raw["config"] = config_path
    for name in sorted(file_backed):
        # Checked before merging: in the loop below, whichever of the two comes last would silently win.
        env_name = PREFIX + name.upper()
        if env_name in environ and env_name + "_FILE" in environ:
            raise ConfigError(f"{env_name} and {env_name}_FILE are both set; set one")
    for env_name, value in environ.items():
        if not env_name.startswith(PREFIX):
            continue
        key = env_name[len(PREFIX):].lower()
        base = key[:-5] if key.endswith("_file") and key[:-5] in file_backed else key
        if base not in known:
            raise ConfigError(f"{env_name} is not a setting of this service (see the README's table)")
        if key != base:
            raw.pop(base, None)  # the environment wins over the file, whichever form it uses
        elif base + "_file" in raw:
            raw.pop(base + "_file")
        raw[key] = value
    for name in file_backed:
        if name + "_file" in raw:
            if name in raw:
                raise ConfigError(f"{PREFIX}{name.upper()} and {PREFIX}{name.upper()}_FILE are both set; set one")
            raw[name] = _read_file_setting(name, raw.pop(name + "_file"))
    return raw


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Build Settings from an environment mapping; raise ConfigError (one line) on a bad value."""
    raw = _raw_values(environ)
    values: dict[str, Any] = {}
    for name, text in raw.items():
        values[name] = _parse(name, text)
    settings = Settings(**values)
    _check_together(settings)
    return settings


def _parse(name: str, text: str) -> Any:
    if name == "redis_url":
        url = text.strip()
        if not re.match(r"^(redis|rediss|unix|redis\+sentinel|sentinel|redis\+cluster|cluster)://", url):
            raise ConfigError(f"{PREFIX}REDIS_URL must start with redis://, rediss://, unix://, sentinel:// or cluster://")
        try:
            urlsplit(url).port  # noqa: B018 - a bad port is refused at start-up, not by the driver's traceback
        except ValueError:
            raise ConfigError(f"{PREFIX}REDIS_URL has a port that is not a number from 0 to 65535") from None
        return url
    if name in ("redis_connect_timeout", "redis_socket_timeout"):
        return _seconds(name, text, 0.01, 60)
    if name == "redis_max_connections":
        return _int(name, text, 1, 10000)
    if name == "redis_wait_replicas":
        return _int(name, text, 0, 64)
    if name == "redis_wait_timeout":  # milliseconds, as WAIT takes them; 0 (wait forever) is refused, and the
        return _int(name, text, 1, 10000)  # cap stays well inside gunicorn's 30 s worker timeout
    if name == "admin_key":
        key = text.strip()
        if not key:
            return None
        if len(key) < 32:
            raise ConfigError(f"{PREFIX}ADMIN_KEY must be at least 32 characters")
        return key
    if name in ("issuer", "audience"):
        value = text.strip()
        if not value or any(c.isspace() or ord(c) < 0x21 or ord(c) > 0x7E for c in value) or '"' in value:
            raise ConfigError(f"{PREFIX}{name.upper()} must be non-empty visible ASCII without quotes")
        if name == "issuer" and not re.match(r"^https?://", value):
            raise ConfigError(f"{PREFIX}ISSUER must be an http:// or https:// URL")
        return value.rstrip("/") if name == "issuer" else value
    if name == "signing_alg":
        for alg in ALGORITHMS:
            if text.strip().lower() == alg.lower():
                return alg
        raise ConfigError(f"{PREFIX}SIGNING_ALG must be one of {', '.join(ALGORITHMS)}, not {text!r}")
    if name == "signing_key_dir":
        return text.strip() or None
    if name == "signing_key_file":
        return text.strip() or None
    if name == "signing_key_passphrase":
        return text if text else None
    if name == "key_encryption_key":
        return _key_encryption_key(text) if text.strip() else None
    if name == "max_ttl":
        return _int(name, text, 1, 86400)
    if name == "clock_skew":
        # At least 1: issue times have one-second resolution, and a token minted in the second of a
        # subject/persona/credential revocation is issued one second later (see revocation.py).
        return _int(name, text, 1, 300)
    if name == "verify_cache_size":  # tokens whose signature verified, per process; 0 turns the cache off
        return _int(name, text, 0, 100_000)  # about 2.4 KB an entry: 100,000 is about 240 MB per process
    if name in ("scopes", "default_scopes"):
        return _scopes(name, text)
    if name == "cors_origins":
        origins = _list(text)
        for origin in origins:
            if origin == "*" or not ORIGIN_RE.match(origin):
                raise ConfigError(f"{PREFIX}CORS_ORIGINS: {origin!r} is not an origin like https://chat.example.com (no '*')")
        return origins
    if name == "trusted_proxies":
        return _int(name, text, 0, 10)
    if name == "metrics":
        return _metrics(text)
    if name == "revoke_keys_from_browsers":
        return _bool(name, text)
    if name == "jwks_max_age":
        return _int(name, text, 0, 86400)
    if name == "signature_window":
        return _int(name, text, 1, 3600)
    if name.startswith("rate_limit_"):
        if not RATE_RE.match(text):
            raise ConfigError(f"{PREFIX}{name.upper()} must look like 30/minute (per second, minute, hour or day), not {text!r}")
        return text.strip()
    if name == "auth_adapters":
        names = _list(text)
        if not names or any(not ADAPTERS_RE.match(n) for n in names) or len(set(names)) != len(names):
            raise ConfigError(f"{PREFIX}AUTH_ADAPTERS must be a comma-separated list of distinct adapter names")
        return names
    if name in _PARSERS:
        return _PARSERS[name](name, text)
    if name == "audit_retention":  # seconds the audit store keeps a record: one hour to ten years
        return _int(name, text, 3600, 10 * 366 * 86400)
    if name == "audit_max_records":  # records kept at most, whatever their age (bounds Redis memory)
        return _int(name, text, 1000, 100_000_000)
    if name == "audit_refusals_per_minute":  # auth.refused records stored a minute (the rest: log lines only)
        return _int(name, text, 0, 100_000)
    if name == "log_level":
        level = text.strip().upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"{PREFIX}LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
        return level
    if name == "log_format":
        value = text.strip().lower()
        if value not in ("json", "text"):
            raise ConfigError(f"{PREFIX}LOG_FORMAT must be json or text")
        return value
    if name == "log_client_address":
        value = text.strip().lower()
        if value not in ("full", "truncated", "off"):
            raise ConfigError(f"{PREFIX}LOG_CLIENT_ADDRESS must be full, truncated or off")
        return value
    if name == "config":
        return text
    raise ConfigError(f"{PREFIX}{name.upper()} is not a setting of this service")  # pragma: no cover


def _metrics(text: str) -> bool | str:
    """on/off, or host:port of a listener of its own (``127.0.0.1:9464``, ``[::1]:9464``, ``0.0.0.0:9464``)."""
    match = re.fullmatch(r"\s*(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})\s*", text)
    if match and 1 <= int(match.group(2)) <= 65535:
        return f"{match.group(1)}:{int(match.group(2))}"
    try:
        return _bool("metrics", text)
    except ConfigError:
        raise ConfigError(f"{PREFIX}METRICS must be on, off or host:port (a listener of its own), not {text!r}") from None


def _optional_url(name: str, text: str) -> str | None:
    value = text.strip()
    if not value:
        return None
    if not re.match(r"^https?://[^\s]+\Z", value):
        raise ConfigError(f"{PREFIX}{name.upper()} must be an http:// or https:// URL")
    return value


def _optional_text(name: str, text: str) -> str | None:
    value = text.strip()
    if not value:
        return None
    if any(c.isspace() or not c.isprintable() for c in value) or len(value) > 256:
        raise ConfigError(f"{PREFIX}{name.upper()} must be visible text without spaces (at most 256 characters)")
    return value


def _claim(name: str, text: str) -> str | None:
    value = text.strip()
    if not value:
        return None
    if not CLAIM_RE.match(value):
        raise ConfigError(f"{PREFIX}{name.upper()} must be a claim or field name (letters, digits, . _ : / -)")
    return value


def _required_claim(name: str, text: str) -> str:
    value = _claim(name, text)
    if value is None:
        raise ConfigError(f"{PREFIX}{name.upper()} must not be empty")
    return value


def _client_id(name: str, text: str) -> str:
    value = text.strip()
    if not CLIENT_ID_RE.match(value):
        raise ConfigError(f"{PREFIX}{name.upper()} must be 1 to 128 characters of A-Z a-z 0-9 . _ : -")
    return value


def _personas(name: str, text: str) -> tuple[str, ...]:
    items = _list(text)
    for item in items:
        if item != "*" and not re.match(r"^[A-Za-z0-9._:-]{1,128}\Z", item):
            raise ConfigError(f"{PREFIX}{name.upper()}: {item!r} is not a personaId (or *)")
    return tuple(dict.fromkeys(items))


def _pepper(name: str, text: str) -> bytes | None:
    value = text.strip()
    if not value:
        return None
    if len(value) < 32:
        raise ConfigError(f"{PREFIX}{name.upper()} must be at least 32 characters of random text")
    return value.encode("utf-8")


def _algorithms(name: str, text: str) -> tuple[str, ...]:
    chosen = []
    for item in _list(text):
        match = [alg for alg in OIDC_ALGORITHMS if alg.lower() == item.lower()]
        if not match:
            raise ConfigError(f"{PREFIX}{name.upper()}: {item!r} is not allowed (asymmetric only: {', '.join(OIDC_ALGORITHMS)})")
        chosen.append(match[0])
    if not chosen:
        raise ConfigError(f"{PREFIX}{name.upper()} must name at least one algorithm")
    return tuple(dict.fromkeys(chosen))


def _grants(name: str, text: str) -> tuple[Grant, ...]:
    if not text.strip():
        return ()
    try:
        document = json.loads(text)
    except ValueError:
        raise ConfigError(f'{PREFIX}{name.upper()} must be a JSON object: {{"group": {{"personas": [...], "scopes": [...]}}}}') from None
    if not isinstance(document, dict):
        raise ConfigError(f"{PREFIX}{name.upper()} must be a JSON object of groups")
    grants = []
    for group, grant in document.items():
        if not isinstance(grant, dict) or set(grant) - {"personas", "scopes"} or not all(
            isinstance(v, list) and all(isinstance(i, str) for i in v) for v in grant.values()
        ):
            raise ConfigError(f"{PREFIX}{name.upper()}: group {group!r} must map to {{\"personas\": [...], \"scopes\": [...]}}")
        grants.append(Grant(
            group=group,
            personas=_personas(name, ",".join(grant.get("personas", []))),
            scopes=_scopes(name, ",".join(grant.get("scopes", []))),
        ))
    return tuple(grants)


def _forward(name: str, text: str) -> tuple[str, ...]:
    items = tuple(item.lower() for item in _list(text))
    if not items or any(item not in SESSION_FORWARD for item in items):
        raise ConfigError(f"{PREFIX}{name.upper()} must list cookie and/or authorization")
    return tuple(dict.fromkeys(items))


def _adapter_options(name: str, text: str) -> dict[str, dict[str, Any]]:
    try:
        document = json.loads(text) if text.strip() else {}
    except ValueError:
        raise ConfigError(f"{PREFIX}{name.upper()} must be a JSON object of {{adapter: {{option: value}}}}") from None
    if not isinstance(document, dict) or not all(isinstance(v, dict) for v in document.values()):
        raise ConfigError(f"{PREFIX}{name.upper()} must be a JSON object of {{adapter: {{option: value}}}}")
    return document


def _rotation(name: str, text: str) -> int | None:
    value = text.strip().lower()
    presets = {"low": 90, "medium": 30, "high": 7}
    if value == "off":
        return None
    if value in presets:
        return presets[value] * 86400
    match = re.fullmatch(r"([0-9]{1,4})d", value)
    if match and 1 <= int(match.group(1)) <= 3650:
        return int(match.group(1)) * 86400
    raise ConfigError(f"{PREFIX}{name.upper()} must be off, low (90 days), medium (30), high (7) or a number of days like 45d")


_PARSERS: dict[str, Any] = {
    "signing_key_rotation": _rotation,
    "signing_key_activation_delay": lambda n, t: _int(n, t, 0, 30 * 86400),
    "signing_key_refresh": lambda n, t: _seconds(n, t, 0.2, 60),
    "subject_pepper": _pepper,
    "oidc_issuer": _optional_url,
    "oidc_audience": _optional_text,
    "oidc_jwks_url": _optional_url,
    "oidc_algorithms": _algorithms,
    "oidc_subject_claim": _required_claim,
    "oidc_personas": _personas,
    "oidc_scopes": _scopes,
    "oidc_groups_claim": _claim,
    "oidc_group_grants": _grants,
    "oidc_jwks_refresh_interval": lambda n, t: _seconds(n, t, 1, 86400),
    "oidc_jwks_cache_seconds": lambda n, t: _int(n, t, 0, 86400),
    "oidc_timeout": lambda n, t: _seconds(n, t, 0.1, 30),
    "oidc_client_id": _client_id,
    "session_url": _optional_url,
    "session_timeout": lambda n, t: _seconds(n, t, 0.1, 30),
    "session_forward": _forward,
    "session_subject_field": _required_claim,
    "session_personas_field": _claim,
    "session_scopes_field": _claim,
    "session_personas": _personas,
    "session_scopes": _scopes,
    "session_cache_seconds": lambda n, t: _int(n, t, 0, 300),
    "session_client_id": _client_id,
    "adapter_options": _adapter_options,
}


def _check_together(settings: Settings) -> None:
    unknown = [s for s in settings.default_scopes if s not in settings.scopes]
    if unknown:
        raise ConfigError(f"{PREFIX}DEFAULT_SCOPES: {unknown[0]!r} is not in {PREFIX}SCOPES")
    if not settings.scopes:
        raise ConfigError(f"{PREFIX}SCOPES must name at least one scope")
    if settings.signing_key_passphrase and not (settings.signing_key_file or settings.signing_key_dir):
        raise ConfigError(f"{PREFIX}SIGNING_KEY_PASSPHRASE is set but neither {PREFIX}SIGNING_KEY_FILE nor {PREFIX}SIGNING_KEY_DIR is")
    if settings.signing_key_dir and (settings.signing_key_file or settings.key_encryption_key is not None):
        raise ConfigError(
            f"{PREFIX}SIGNING_KEY_DIR is a ring of its own: set it alone, without {PREFIX}SIGNING_KEY_FILE or {PREFIX}KEY_ENCRYPTION_KEY"
        )
    adapters = set(settings.auth_adapters)
    if "hmac" in adapters and settings.key_encryption_key is None:
        raise ConfigError(
            f"{PREFIX}AUTH_ADAPTERS names hmac but {PREFIX}KEY_ENCRYPTION_KEY is not set: signed requests are checked "
            "against secret keys kept encrypted under it"
        )
    if "oidc" in adapters:
        for needed in ("oidc_issuer", "oidc_audience", "oidc_jwks_url"):
            if getattr(settings, needed) is None:
                raise ConfigError(f"{PREFIX}AUTH_ADAPTERS names oidc but {PREFIX}{needed.upper()} is not set")
    if "session" in adapters and settings.session_url is None:
        raise ConfigError(f"{PREFIX}AUTH_ADAPTERS names session but {PREFIX}SESSION_URL is not set")
    granted = [("OIDC_SCOPES", settings.oidc_scopes or ()), ("SESSION_SCOPES", settings.session_scopes or ())]
    granted += [("OIDC_GROUP_GRANTS", grant.scopes) for grant in settings.oidc_group_grants]
    for label, values in granted:
        unknown = [s for s in values if s not in settings.scopes]
        if unknown:
            raise ConfigError(f"{PREFIX}{label}: {unknown[0]!r} is not in {PREFIX}SCOPES")
    if settings.redis_url and not (settings.signing_key_file or settings.signing_key_dir) and settings.key_encryption_key is None:
        raise ConfigError(
            f"{PREFIX}REDIS_URL is set but no signing key is: set {PREFIX}KEY_ENCRYPTION_KEY (a managed, rotating ring) "
            f"or {PREFIX}SIGNING_KEY_FILE (one static key) so that every instance signs with the same keys"
        )
    if settings.redis_wait_replicas and (settings.redis_url is None or re.match(r"^(redis\+)?cluster://", settings.redis_url)):
        raise ConfigError(
            f"{PREFIX}REDIS_WAIT_REPLICAS needs {PREFIX}REDIS_URL naming a standalone or sentinel Redis "
            "(WAIT is not used on the embedded stores or on cluster:// URLs)"
        )
    if settings.activation_delay < settings.jwks_max_age + settings.signing_key_refresh:
        raise ConfigError(
            f"{PREFIX}SIGNING_KEY_ACTIVATION_DELAY ({settings.activation_delay}) must be at least {PREFIX}JWKS_MAX_AGE "
            f"({settings.jwks_max_age}) plus {PREFIX}SIGNING_KEY_REFRESH ({settings.signing_key_refresh:g}): a new key must not "
            "sign before every instance publishes it and every cached JWKS has been refreshed"
        )
