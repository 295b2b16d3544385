"""GET /v1/revocations/feed: what local verifiers poll to honour revocations."""

from __future__ import annotations

import pytest

from tests.conftest import assert_error, bearer
from token_service.stores.cursor import encode_cursor


@pytest.fixture
def reader(actions):
    return actions.create_key("secret", permissions=["introspect"])["key"]


def feed(client, key, since=None):
    query = {} if since is None else {"since": since}
    response = client.get("/v1/revocations/feed", query_string=query, headers=bearer(key))
    assert response.status_code == 200, response.get_json()
    assert response.headers["Cache-Control"] == "no-store"
    return response.get_json()


def test_the_feed_lists_revocations_in_force_then_what_changed(actions, client, reader, clock):
    made = actions.revoke(sub="mallory").get_json()
    first = feed(client, reader)
    assert first["items"] == [{"id": made["id"], "type": "sub", "value": "mallory", "revoked_at": made["revoked_at"],
                               "expires_at": made["expires_at"], "lifted": False}]
    assert first["complete_as_of"] == int(clock())
    assert feed(client, reader, first["next_cursor"])["items"] == []
    later = actions.revoke(jti="j-1").get_json()
    assert actions.admin("DELETE", f"/v1/admin/revocations/{made['id']}").status_code == 204
    changed = feed(client, reader, first["next_cursor"])
    assert [(i["id"], i["lifted"]) for i in changed["items"]] == [(later["id"], False), (made["id"], True)]
    assert feed(client, reader, changed["next_cursor"])["items"] == []


def test_admin_keys_may_read_the_feed(actions, client):
    assert feed(client, actions.admin_key)["items"] == []


def test_who_may_not_read_the_feed(actions, client):
    assert_error(client.get("/v1/revocations/feed"), 401, "unauthorized")
    plain = actions.create_key("secret")["key"]
    assert_error(client.get("/v1/revocations/feed", headers=bearer(plain)), 403, "access_denied")


@pytest.mark.parametrize("since", ["nope", "czE=x", "s1", encode_cursor(10**21), encode_cursor(2**63 - 1)])
def test_a_cursor_not_issued_here_is_400(client, reader, since):
    assert_error(client.get("/v1/revocations/feed", query_string={"since": since}, headers=bearer(reader)), 400, "invalid_request")


def test_a_listing_cursor_beyond_any_sequence_number_is_400_not_a_store_error(actions, client):
    """A well-formed cursor past Redis's counters would make an invalid stream id: refused before the store."""
    from tests.conftest import ADMIN_KEY

    actions.revoke(jti="listed")
    response = client.get("/v1/admin/revocations", query_string={"cursor": encode_cursor(10**21)}, headers=bearer(ADMIN_KEY))
    assert_error(response, 400, "invalid_request")


def test_the_feed_fails_closed_when_the_store_is_down(down_client):
    from tests.conftest import ADMIN_KEY

    assert_error(down_client.get("/v1/revocations/feed", headers=bearer(ADMIN_KEY)), 503, "temporarily_unavailable")
