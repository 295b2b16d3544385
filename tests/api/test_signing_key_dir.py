"""A ring from a mounted key directory: files named <unix time>[-label].pem, the same staged rules."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.api.test_signing_keys import jwks, kid_of, ring
from tests.conftest import Actions, assert_error, with_settings
from token_service import create_app
from token_service.config import ConfigError
from token_service.keys import SigningKey


def write_key(directory: Path, activates_at: int, label: str = "") -> str:
    key = SigningKey.generate("ES256")
    (directory / f"{activates_at}{label}.pem").write_bytes(key.private_pem())
    return key.kid


@pytest.fixture
def keydir(tmp_path: Path, clock) -> Path:
    directory = tmp_path / "keys"
    directory.mkdir()
    return directory


def app_for(settings, clock, directory: Path) -> Actions:
    return Actions(create_app(with_settings(settings, signing_key_file=None, signing_key_dir=str(directory)), clock=clock).test_client())


def test_a_file_added_to_the_directory_is_published_first_and_signs_at_its_time(settings, clock, keydir):
    first = write_key(keydir, int(clock()) - 10, "-first")
    actions = app_for(settings, clock, keydir)
    secret = actions.create_key("secret")["key"]
    assert kid_of(actions.token(secret)) == first
    second = write_key(keydir, int(clock()) + 600)
    clock.advance(6)  # the directory is re-read every few seconds
    published, max_age = jwks(actions)
    assert published == {first, second} and max_age == 300
    assert ring(actions)[second]["status"] == "next"
    assert kid_of(actions.token(secret)) == first
    clock.advance(600)
    assert kid_of(actions.token(secret)) == second
    assert ring(actions)[first]["status"] == "retiring"


def test_rotation_through_the_api_is_refused_with_directions(settings, clock, keydir):
    write_key(keydir, int(clock()) - 10)
    actions = app_for(settings, clock, keydir)
    body = assert_error(actions.admin("POST", "/v1/admin/signing-keys/rotate"), 409, "conflict")
    assert "<unix time>.pem" in body["error_description"]


def test_a_compromised_key_hands_over_to_a_file_added_for_now(settings, clock, keydir):
    compromised = write_key(keydir, int(clock()) - 10)
    actions = app_for(settings, clock, keydir)
    secret = actions.create_key("secret")["key"]
    old = actions.token(secret)
    assert actions.revoke(kid=compromised).status_code == 201
    assert actions.verify(old).status_code == 401
    assert_error(actions.mint(secret, expect=503), 503, "temporarily_unavailable")  # nothing else may sign yet
    replacement = write_key(keydir, int(clock()), "-incident")
    clock.advance(1.5)  # past the forced re-read's one-second gap
    assert kid_of(actions.token(secret)) == replacement
    assert jwks(actions)[0] == {replacement}


@pytest.mark.parametrize("name", ["key.pem", "12ab.pem", "100-bad label.pem"])
def test_a_badly_named_file_stops_start_up_with_one_line(settings, clock, keydir, name):
    write_key(keydir, int(clock()) - 10)
    (keydir / name).write_bytes(SigningKey.generate("ES256").private_pem())
    with pytest.raises(ConfigError) as caught:
        app_for(settings, clock, keydir)
    assert "SIGNING_KEY_DIR" in str(caught.value) and "\n" not in str(caught.value)


def test_an_empty_directory_stops_start_up(settings, clock, keydir):
    with pytest.raises(ConfigError) as caught:
        app_for(settings, clock, keydir)
    assert "holds no" in str(caught.value)


def test_kubernetes_links_and_hidden_files_are_ignored(settings, clock, keydir):
    kid = write_key(keydir, int(clock()) - 10)
    (keydir / "..data").mkdir()
    os.symlink(keydir / "..data", keydir / ".hidden")
    actions = app_for(settings, clock, keydir)
    assert set(ring(actions)) == {kid}


def test_the_directory_is_exclusive_with_a_key_file_or_a_managed_ring():
    from token_service.config import load_settings

    with pytest.raises(ConfigError):
        load_settings({"TOKEN_SERVICE_SIGNING_KEY_DIR": "/x", "TOKEN_SERVICE_SIGNING_KEY_FILE": "/y"})
