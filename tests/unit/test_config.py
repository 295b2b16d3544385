"""Settings: defaults from API.md, every TOKEN_SERVICE_* variable, *_FILE variants, the TOML file, and
one-line errors that name the setting (start-up stops with that line and nothing else)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import FrozenInstanceError
from pathlib import Path
from typing import Any

import pytest

from token_service.config import ConfigError, Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
GOOD_ADMIN_KEY = "a" * 32
KEK_32_HEX = "ab" * 32


def env(**values: str) -> dict[str, str]:
    """An environment mapping of TOKEN_SERVICE_<NAME> from keyword NAME=value."""
    return {f"TOKEN_SERVICE_{name}": value for name, value in values.items()}


def config_error(environ: dict[str, str]) -> str:
    """The message of the ConfigError ``load_settings(environ)`` raises; asserts it is one line."""
    with pytest.raises(ConfigError) as info:
        load_settings(environ)
    message = str(info.value)
    assert message, "a ConfigError must say what is wrong"
    assert "\n" not in message and "\r" not in message, f"not one line: {message!r}"
    return message


@pytest.fixture
def key_pem(tmp_path: Path) -> str:
    """A PEM file path (contents are not read by load_settings, only named)."""
    path = tmp_path / "signing.pem"
    path.write_text("placeholder")
    return str(path)


# -- defaults ---------------------------------------------------------------------------------------


def test_defaults_are_the_contracts() -> None:
    settings = load_settings({})
    assert settings.redis_url is None
    assert settings.embedded is True
    assert settings.admin_key is None
    assert settings.issuer == "http://localhost:8000"
    assert settings.audience == "persona-api"
    assert settings.signing_alg == "ES256"
    assert settings.signing_key_file is None
    assert settings.signing_key_passphrase is None
    assert settings.key_encryption_key is None
    assert settings.max_ttl == 900
    assert settings.clock_skew == 30
    assert settings.cors_origins == ()
    assert settings.trusted_proxies == 0
    assert settings.metrics is True
    assert settings.jwks_max_age == 300
    assert settings.signature_window == 300
    assert settings.rate_limit_public_mint == "30/minute"
    assert settings.rate_limit_secret_mint == "6000/minute"
    assert settings.rate_limit_failed_auth == "20/minute"
    assert settings.rate_limit_admin == "120/minute"
    assert settings.revoke_keys_from_browsers is True
    assert settings.config is None
    assert settings.default_scopes == ("chat:read", "chat:write")
    assert set(settings.default_scopes) <= set(settings.scopes)
    assert settings.revocation_horizon == 900 + 30


def test_load_settings_of_empty_environ_equals_settings_defaults() -> None:
    assert load_settings({}) == Settings()


def test_variables_without_the_prefix_are_ignored() -> None:
    assert load_settings({"PATH": "/bin", "HOME": "/root", "token_service_max_ttl": "abc", "TOKEN_SERVICEX": "1"}) == Settings()


def test_settings_are_frozen() -> None:
    settings = load_settings({})
    with pytest.raises(FrozenInstanceError):
        settings.max_ttl = 5  # type: ignore[misc]


def test_secrets_are_not_in_the_repr() -> None:
    settings = load_settings(env(ADMIN_KEY="s3cret-admin-key-" + "x" * 20))
    assert "s3cret" not in repr(settings)


# -- integers with bounds ---------------------------------------------------------------------------

INT_BOUNDS = [
    ("MAX_TTL", "max_ttl", 1, 86400),
    ("CLOCK_SKEW", "clock_skew", 1, 300),
    ("VERIFY_CACHE_SIZE", "verify_cache_size", 0, 100_000),
    ("TRUSTED_PROXIES", "trusted_proxies", 0, 10),
    ("JWKS_MAX_AGE", "jwks_max_age", 0, 86400),
    ("SIGNATURE_WINDOW", "signature_window", 1, 3600),
    ("REDIS_MAX_CONNECTIONS", "redis_max_connections", 1, 10000),
]


@pytest.mark.parametrize(("var", "attr", "low", "high"), INT_BOUNDS)
def test_integer_settings_accept_their_bounds(var: str, attr: str, low: int, high: int) -> None:
    assert getattr(load_settings(env(**{var: str(low)})), attr) == low
    assert getattr(load_settings(env(**{var: str(high)})), attr) == high
    assert getattr(load_settings(env(**{var: f" {high} "})), attr) == high


@pytest.mark.parametrize(("var", "attr", "low", "high"), INT_BOUNDS)
def test_integer_settings_refuse_values_out_of_bounds(var: str, attr: str, low: int, high: int) -> None:
    for bad in (str(low - 1), str(high + 1)):
        message = config_error(env(**{var: bad}))
        assert f"TOKEN_SERVICE_{var}" in message


@pytest.mark.parametrize(("var", "attr", "low", "high"), INT_BOUNDS)
@pytest.mark.parametrize("bad", ["abc", "", "1.5", "12abc", "0x10", "1e3", "900\n900"])
def test_integer_settings_refuse_non_integers(var: str, attr: str, low: int, high: int, bad: str) -> None:
    message = config_error(env(**{var: bad}))
    assert f"TOKEN_SERVICE_{var}" in message


def test_max_ttl_value() -> None:
    assert load_settings(env(MAX_TTL="600")).max_ttl == 600
    assert load_settings(env(MAX_TTL="600", CLOCK_SKEW="5")).revocation_horizon == 605


@pytest.mark.parametrize("var", ["REDIS_CONNECT_TIMEOUT", "REDIS_SOCKET_TIMEOUT"])
def test_redis_timeouts(var: str) -> None:
    attr = var.lower()
    assert getattr(load_settings(env(**{var: "1.5"})), attr) == 1.5
    assert getattr(load_settings(env(**{var: "0.01"})), attr) == 0.01
    assert getattr(load_settings(env(**{var: "60"})), attr) == 60
    for bad in ("0", "61", "abc", "", "nan", "inf", "-1"):
        assert f"TOKEN_SERVICE_{var}" in config_error(env(**{var: bad}))


# -- booleans -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("var", "attr"), [("METRICS", "metrics"), ("REVOKE_KEYS_FROM_BROWSERS", "revoke_keys_from_browsers")])
def test_booleans_are_on_or_off(var: str, attr: str) -> None:
    for raw in ("on", "ON", " On ", "true", "1", "yes"):
        assert getattr(load_settings(env(**{var: raw})), attr) is True, raw
    for raw in ("off", "OFF", "false", "0", "no"):
        assert getattr(load_settings(env(**{var: raw})), attr) is False, raw
    for bad in ("maybe", "", "2", "enabled"):
        message = config_error(env(**{var: bad}))
        assert f"TOKEN_SERVICE_{var}" in message


# -- lists ----------------------------------------------------------------------------------------


def test_cors_origins_are_comma_separated() -> None:
    settings = load_settings(env(CORS_ORIGINS="https://chat.example.com, http://localhost:3000 ,,https://a.b.example"))
    assert settings.cors_origins == ("https://chat.example.com", "http://localhost:3000", "https://a.b.example")
    assert load_settings(env(CORS_ORIGINS="")).cors_origins == ()


@pytest.mark.parametrize("bad", ["*", "chat.example.com", "https://chat.example.com/", "https://chat.example.com/path",
                                 "ftp://chat.example.com", "https://*.example.com", "https://a.com,null"])
def test_cors_origins_refuse_what_is_not_an_origin(bad: str) -> None:
    assert "TOKEN_SERVICE_CORS_ORIGINS" in config_error(env(CORS_ORIGINS=bad))


def test_scopes_and_default_scopes_are_lists() -> None:
    settings = load_settings(env(SCOPES="chat:read, chat:write,admin:x", DEFAULT_SCOPES="chat:read"))
    assert settings.scopes == ("chat:read", "chat:write", "admin:x")
    assert settings.default_scopes == ("chat:read",)
    assert load_settings(env(SCOPES="a,a,b", DEFAULT_SCOPES="a")).scopes == ("a", "b")


@pytest.mark.parametrize("bad", ['chat"read', "chat\\read", "x" * 65, "chät"])
def test_scopes_refuse_invalid_scope_tokens(bad: str) -> None:
    assert "TOKEN_SERVICE_SCOPES" in config_error(env(SCOPES=f"chat:read,{bad}", DEFAULT_SCOPES="chat:read"))


def test_default_scopes_must_be_within_scopes() -> None:
    message = config_error(env(SCOPES="chat:read", DEFAULT_SCOPES="chat:read,chat:write"))
    assert "TOKEN_SERVICE_DEFAULT_SCOPES" in message
    assert "chat:write" in message


def test_scopes_must_not_be_empty() -> None:
    message = config_error(env(SCOPES=" , ", DEFAULT_SCOPES=""))
    assert "TOKEN_SERVICE_SCOPES" in message


def test_auth_adapters_list() -> None:
    assert load_settings(env(AUTH_ADAPTERS="api_key")).auth_adapters == ("api_key",)
    assert load_settings(env(AUTH_ADAPTERS="api_key, mine")).auth_adapters == ("api_key", "mine")
    assert load_settings(env(AUTH_ADAPTERS="api_key,my_pkg.adapters:Header")).auth_adapters == ("api_key", "my_pkg.adapters:Header")
    for bad in ("", "api_key,api_key", "Api-Key", "1x", "pkg.mod:", "pkg mod:Class"):
        assert "TOKEN_SERVICE_AUTH_ADAPTERS" in config_error(env(AUTH_ADAPTERS=bad))


# -- rate limits ----------------------------------------------------------------------------------

RATE_VARS = ["RATE_LIMIT_PUBLIC_MINT", "RATE_LIMIT_SECRET_MINT", "RATE_LIMIT_FAILED_AUTH", "RATE_LIMIT_ADMIN"]


@pytest.mark.parametrize("var", RATE_VARS)
def test_rate_limits_parse(var: str) -> None:
    attr = var.lower()
    for good in ("30/minute", "5/second", "1000/hour", "7/day", "10 per minute", "10/2 minutes", " 30/minute "):
        assert getattr(load_settings(env(**{var: good})), attr) == good.strip()


@pytest.mark.parametrize("var", RATE_VARS)
@pytest.mark.parametrize("bad", ["30", "minute", "30/fortnight", "thirty/minute", "30/minute;1/second", "", "-1/minute"])
def test_rate_limits_refuse_bad_values(var: str, bad: str) -> None:
    assert f"TOKEN_SERVICE_{var}" in config_error(env(**{var: bad}))


# -- strings --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "alg"), [("ES256", "ES256"), ("es256", "ES256"), ("EdDSA", "EdDSA"), ("eddsa", "EdDSA"),
                                          ("EDDSA", "EdDSA"), ("RS256", "RS256"), ("rs256", "RS256"), (" Es256 ", "ES256")])
def test_signing_alg_is_case_insensitive(raw: str, alg: str) -> None:
    assert load_settings(env(SIGNING_ALG=raw)).signing_alg == alg


@pytest.mark.parametrize("bad", ["HS256", "none", "ES384", "PS256", "", "Ed25519"])
def test_signing_alg_refuses_others(bad: str) -> None:
    assert "TOKEN_SERVICE_SIGNING_ALG" in config_error(env(SIGNING_ALG=bad))


def test_issuer_and_audience() -> None:
    settings = load_settings(env(ISSUER="https://tokens.example.com/", AUDIENCE="chat-api"))
    assert settings.issuer == "https://tokens.example.com"
    assert settings.audience == "chat-api"
    for bad in ("tokens.example.com", "", "https://exa mple.com", 'https://"x"', "ftp://x"):
        assert "TOKEN_SERVICE_ISSUER" in config_error(env(ISSUER=bad))
    for bad in ("", "chat api", 'a"b', "caf\u00e9"):
        assert "TOKEN_SERVICE_AUDIENCE" in config_error(env(AUDIENCE=bad))


def test_log_level() -> None:
    assert load_settings(env(LOG_LEVEL="debug")).log_level == "DEBUG"
    assert "TOKEN_SERVICE_LOG_LEVEL" in config_error(env(LOG_LEVEL="verbose"))


def test_redis_url(key_pem: str) -> None:
    for url in ("redis://localhost:6379/0", "rediss://r.example:6380/1", "unix:///run/redis.sock",
                "sentinel://s1:26379/mymaster", "cluster://c1:7000"):
        settings = load_settings(env(REDIS_URL=url, SIGNING_KEY_FILE=key_pem))
        assert settings.redis_url == url
        assert settings.embedded is False
    for bad in ("http://localhost:6379", "localhost:6379", "memcached://x", "redis://h:abc/0", "redis://h:99999/0",
                "rediss://user:s3cret@h:-1/0"):
        message = config_error(env(REDIS_URL=bad, SIGNING_KEY_FILE=key_pem))
        assert "TOKEN_SERVICE_REDIS_URL" in message
        assert "s3cret" not in message


def test_redis_url_without_signing_key_file_is_refused() -> None:
    message = config_error(env(REDIS_URL="redis://localhost:6379/0"))
    assert "TOKEN_SERVICE_REDIS_URL" in message
    assert "TOKEN_SERVICE_SIGNING_KEY_FILE" in message


def test_signing_key_file_is_named_not_read(key_pem: str) -> None:
    assert load_settings(env(SIGNING_KEY_FILE=key_pem)).signing_key_file == key_pem


# -- unknown variables ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["TOKEN_SERVICE_FOO", "TOKEN_SERVICE_MAX_TTL_FILE", "TOKEN_SERVICE_ISSUER_FILE",
                                  "TOKEN_SERVICE_CONFIG_FILE", "TOKEN_SERVICE_", "TOKEN_SERVICE_max_ttl_x"])
def test_unknown_variable_is_refused(name: str) -> None:
    message = config_error({name: "1"})
    assert name in message


# -- admin key and *_FILE -------------------------------------------------------------------------


def test_admin_key_from_the_environment() -> None:
    key = "k" * 32
    assert load_settings(env(ADMIN_KEY=key)).admin_key == key
    assert load_settings(env(ADMIN_KEY="")).admin_key is None


@pytest.mark.parametrize("length", [1, 16, 31])
def test_admin_key_under_32_characters_is_refused(length: int) -> None:
    secret = "Q" * length
    message = config_error(env(ADMIN_KEY=secret))
    assert "TOKEN_SERVICE_ADMIN_KEY" in message
    assert "32" in message
    assert secret not in message


def test_admin_key_file_is_read_and_stripped(tmp_path: Path) -> None:
    path = tmp_path / "admin_key"
    path.write_text("\n  " + GOOD_ADMIN_KEY + " \n\n")
    assert load_settings(env(ADMIN_KEY_FILE=str(path))).admin_key == GOOD_ADMIN_KEY


def test_admin_key_file_with_a_short_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "admin_key"
    path.write_text("short-secret\n")
    message = config_error(env(ADMIN_KEY_FILE=str(path)))
    assert "ADMIN_KEY" in message
    assert "short-secret" not in message


def test_missing_file_is_refused_naming_the_file_variable(tmp_path: Path) -> None:
    message = config_error(env(ADMIN_KEY_FILE=str(tmp_path / "absent")))
    assert "TOKEN_SERVICE_ADMIN_KEY_FILE" in message


def test_binary_file_is_refused_naming_the_file_variable(tmp_path: Path) -> None:
    path = tmp_path / "binary"
    path.write_bytes(b"\xff\xfe\x00" * 20)
    assert "TOKEN_SERVICE_ADMIN_KEY_FILE" in config_error(env(ADMIN_KEY_FILE=str(path)))


def test_passphrase_file_is_read_and_stripped(tmp_path: Path, key_pem: str) -> None:
    path = tmp_path / "passphrase"
    path.write_text("  correct horse battery staple \n")
    settings = load_settings(env(SIGNING_KEY_FILE=key_pem, SIGNING_KEY_PASSPHRASE_FILE=str(path)))
    assert settings.signing_key_passphrase == "correct horse battery staple"


def test_passphrase_from_the_environment(key_pem: str) -> None:
    settings = load_settings(env(SIGNING_KEY_FILE=key_pem, SIGNING_KEY_PASSPHRASE="pass phrase"))
    assert settings.signing_key_passphrase == "pass phrase"
    assert "pass phrase" not in repr(settings)


def test_passphrase_without_a_key_file_is_refused() -> None:
    message = config_error(env(SIGNING_KEY_PASSPHRASE="pass phrase"))
    assert "TOKEN_SERVICE_SIGNING_KEY_PASSPHRASE" in message
    assert "pass phrase" not in message


@pytest.mark.parametrize("name", ["ADMIN_KEY", "SIGNING_KEY_PASSPHRASE", "KEY_ENCRYPTION_KEY"])
@pytest.mark.parametrize("file_first", [True, False])
def test_both_a_variable_and_its_file_variant_are_refused(tmp_path: Path, key_pem: str, name: str, file_first: bool) -> None:
    value = {"ADMIN_KEY": GOOD_ADMIN_KEY, "SIGNING_KEY_PASSPHRASE": "pass phrase", "KEY_ENCRYPTION_KEY": KEK_32_HEX}[name]
    path = tmp_path / "value"
    path.write_text(value)
    pairs = [(f"TOKEN_SERVICE_{name}_FILE", str(path)), (f"TOKEN_SERVICE_{name}", value)]
    if not file_first:
        pairs.reverse()
    environ = {"TOKEN_SERVICE_SIGNING_KEY_FILE": key_pem, **dict(pairs)}
    message = config_error(environ)
    assert f"TOKEN_SERVICE_{name}" in message
    assert f"TOKEN_SERVICE_{name}_FILE" in message


# -- key-encryption key ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["ab" * 31, "short", "00", "QUJD", "!" * 50, "Zm9vYmFy"])
def test_key_encryption_key_under_32_bytes_is_refused(bad: str) -> None:
    message = config_error(env(KEY_ENCRYPTION_KEY=bad))
    assert "TOKEN_SERVICE_KEY_ENCRYPTION_KEY" in message
    assert "32" in message and "bytes" in message
    assert bad not in message


def test_key_encryption_key_file_under_32_bytes_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "kek"
    path.write_text("ab" * 31 + "\n")
    message = config_error(env(KEY_ENCRYPTION_KEY_FILE=str(path)))
    assert "KEY_ENCRYPTION_KEY" in message and "32" in message and "bytes" in message


@pytest.mark.parametrize("good", ["ab" * 32, "AB" * 32, "A" * 43, "A" * 43 + "=", "_-" * 22])
def test_key_encryption_key_of_32_bytes_passes_the_length_check(good: str) -> None:
    # This version refuses a managed ring outright, but never because a 32-byte key is "too short".
    try:
        settings = load_settings(env(KEY_ENCRYPTION_KEY=good))
    except ConfigError as exc:
        assert "at least 32" not in str(exc)
        assert "\n" not in str(exc)
        assert good not in str(exc)
    else:
        assert settings.key_encryption_key is not None and len(settings.key_encryption_key) >= 32


# -- TOML file ------------------------------------------------------------------------------------


def write_toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "token-service.toml"
    path.write_text(text)
    return str(path)


def test_toml_file_uses_lower_case_names(tmp_path: Path) -> None:
    path = write_toml(tmp_path, """
max_ttl = 600
clock_skew = 10
issuer = "https://tokens.example.com"
signing_alg = "eddsa"
metrics = false
cors_origins = ["https://a.example.com", "https://b.example.com"]
rate_limit_admin = "60/minute"
""")
    settings = load_settings(env(CONFIG=path))
    assert settings.max_ttl == 600
    assert settings.clock_skew == 10
    assert settings.issuer == "https://tokens.example.com"
    assert settings.signing_alg == "EdDSA"
    assert settings.metrics is False
    assert settings.cors_origins == ("https://a.example.com", "https://b.example.com")
    assert settings.rate_limit_admin == "60/minute"
    assert settings.config == path


def test_environment_wins_over_the_toml_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "max_ttl = 600\naudience = \"from-file\"\n")
    settings = load_settings(env(CONFIG=path, MAX_TTL="120"))
    assert settings.max_ttl == 120
    assert settings.audience == "from-file"


def test_environment_file_variant_wins_over_the_toml_value(tmp_path: Path) -> None:
    key_file = tmp_path / "admin"
    key_file.write_text("e" * 40)
    path = write_toml(tmp_path, f'admin_key = "{"f" * 40}"\n')
    assert load_settings(env(CONFIG=path, ADMIN_KEY_FILE=str(key_file))).admin_key == "e" * 40


def test_toml_file_variant(tmp_path: Path) -> None:
    key_file = tmp_path / "admin"
    key_file.write_text(" " + "e" * 40 + "\n")
    path = write_toml(tmp_path, f'admin_key_file = "{key_file}"\n')
    assert load_settings(env(CONFIG=path)).admin_key == "e" * 40


def test_toml_value_is_validated_like_the_environment(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "max_ttl = 0\n")
    assert "TOKEN_SERVICE_MAX_TTL" in config_error(env(CONFIG=path))


@pytest.mark.parametrize("text", ["colour = \"blue\"\n", "MAX_TTL = 600\n", "config = \"other.toml\"\n", "max_ttl_file = \"x\"\n"])
def test_unknown_key_in_toml_is_refused(tmp_path: Path, text: str) -> None:
    path = write_toml(tmp_path, text)
    message = config_error(env(CONFIG=path))
    assert "TOKEN_SERVICE_CONFIG" in message
    assert text.split(" ")[0] in message


@pytest.mark.parametrize("text", ["max_ttl = \n", "max_ttl = [1,\n\n\n", "[table\nx=1", "a = 1\na = 2\n", "= 3"])
def test_invalid_toml_is_one_line(tmp_path: Path, text: str) -> None:
    path = write_toml(tmp_path, text)
    assert "TOKEN_SERVICE_CONFIG" in config_error(env(CONFIG=path))


def test_toml_value_of_unsupported_type_is_refused(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[max_ttl]\nvalue = 3\n")
    assert "TOKEN_SERVICE_CONFIG" in config_error(env(CONFIG=path))


def test_missing_toml_file_is_refused(tmp_path: Path) -> None:
    assert "TOKEN_SERVICE_CONFIG" in config_error(env(CONFIG=str(tmp_path / "absent.toml")))


# -- start-up with a bad environment --------------------------------------------------------------


def run_wsgi(extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {key: value for key, value in os.environ.items() if not key.startswith("TOKEN_SERVICE_")}
    return subprocess.run([sys.executable, "-c", "import wsgi"], env={**base, **extra}, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("extra", [
    env(MAX_TTL="abc"),
    env(FOO="1"),
    env(ADMIN_KEY="too-short"),
    env(REDIS_URL="redis://127.0.0.1:1/0"),
    env(KEY_ENCRYPTION_KEY="abcd"),
    env(SIGNING_ALG="HS256"),
    env(AUTH_ADAPTERS="no_such_adapter"),
], ids=["max_ttl", "unknown", "admin_key", "redis_without_key", "kek", "alg", "adapter"])
def test_wsgi_start_up_with_a_bad_environment_prints_one_line(extra: dict[str, str]) -> None:
    result = run_wsgi(extra)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    name = next(iter(extra))
    assert name in lines[0]
    assert result.stdout == ""


def test_wsgi_start_up_with_a_bad_key_file_prints_one_line(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    path.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    result = run_wsgi(env(SIGNING_KEY_FILE=str(path)))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "TOKEN_SERVICE_SIGNING_KEY_FILE" in lines[0]
    assert "not a key" not in lines[0]


def test_every_setting_has_a_parser() -> None:
    """Each field of Settings can be set from the environment (no setting is silently unknown)."""
    samples: dict[str, Any] = {
        "redis_url": None, "config": None, "admin_key": "x" * 32, "key_encryption_key": None,
        "signing_key_passphrase": None, "signing_key_file": "/dev/null", "subject_pepper": None,
        "oidc_group_grants": (), "adapter_options": {}, "oidc_scopes": None, "session_scopes": None,
        "oidc_issuer": None, "oidc_audience": None, "oidc_jwks_url": None, "session_url": None,
        "oidc_groups_claim": None, "session_personas_field": None, "session_scopes_field": None,
        "signing_key_rotation": None, "signing_key_activation_delay": None, "signing_key_dir": None,
        "log_format": None,
    }
    for field_name in Settings.__dataclass_fields__:
        if field_name in samples:
            continue
        default = getattr(Settings(), field_name)
        if isinstance(default, bool):
            raw = "on" if default else "off"
        elif isinstance(default, tuple):
            raw = ",".join(default)
        else:
            raw = str(default)
        if field_name == "default_scopes":
            continue  # checked together with scopes above
        assert getattr(load_settings({f"TOKEN_SERVICE_{field_name.upper()}": raw}), field_name) == default, field_name


def test_signing_key_rotation_presets() -> None:
    assert load_settings(env()).signing_key_rotation == 90 * 86400
    assert load_settings(env(SIGNING_KEY_ROTATION="medium")).signing_key_rotation == 30 * 86400
    assert load_settings(env(SIGNING_KEY_ROTATION="high")).signing_key_rotation == 7 * 86400
    assert load_settings(env(SIGNING_KEY_ROTATION="45d")).signing_key_rotation == 45 * 86400
    assert load_settings(env(SIGNING_KEY_ROTATION="off")).signing_key_rotation is None
    for bad in ("weekly", "0d", "12h", ""):
        assert "TOKEN_SERVICE_SIGNING_KEY_ROTATION" in config_error(env(SIGNING_KEY_ROTATION=bad))


def test_activation_delay_defaults_to_twice_the_jwks_max_age_and_is_never_shorter_than_it() -> None:
    assert load_settings(env()).activation_delay == 600
    assert load_settings(env(JWKS_MAX_AGE="100", SIGNING_KEY_ACTIVATION_DELAY="105")).activation_delay == 105
    assert "SIGNING_KEY_ACTIVATION_DELAY" in config_error(env(JWKS_MAX_AGE="300", SIGNING_KEY_ACTIVATION_DELAY="304"))
    # the instances re-read the ring every SIGNING_KEY_REFRESH seconds: that time counts too
    assert load_settings(env(JWKS_MAX_AGE="2", SIGNING_KEY_ACTIVATION_DELAY="3", SIGNING_KEY_REFRESH="0.5")).activation_delay == 3
    assert "SIGNING_KEY_REFRESH" in config_error(env(JWKS_MAX_AGE="2", SIGNING_KEY_ACTIVATION_DELAY="3"))


def test_metrics_is_on_off_or_a_listener_address() -> None:
    assert load_settings(env(METRICS="127.0.0.1:9464")).metrics_listener == ("127.0.0.1", 9464)
    assert load_settings(env(METRICS="[::1]:9464")).metrics_listener == ("::1", 9464)
    assert load_settings(env(METRICS="on")).metrics_listener is None
    for bad in ("host:0", "host:65536", ":9464", "host:", "a b:1"):
        assert "TOKEN_SERVICE_METRICS must be on, off or host:port" in config_error(env(METRICS=bad)), bad


def test_log_format_and_client_address() -> None:
    assert load_settings(env(LOG_FORMAT="JSON")).log_format == "json"
    assert load_settings(env(LOG_FORMAT="text")).log_json is False
    assert "TOKEN_SERVICE_LOG_FORMAT" in config_error(env(LOG_FORMAT="yaml"))
    assert load_settings(env()).log_client_address == "truncated"
    assert load_settings(env(LOG_CLIENT_ADDRESS="Off")).log_client_address == "off"
    assert "TOKEN_SERVICE_LOG_CLIENT_ADDRESS" in config_error(env(LOG_CLIENT_ADDRESS="hashed"))
