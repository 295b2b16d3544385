from __future__ import annotations


def test_mint_verify_revoke_roundtrip(actions, client):
    key = actions.create_key("secret")
    token = actions.token(key["key"])
    ok = actions.verify(token, "?personaId=support-bot&scope=chat:read")
    assert ok.status_code == 200, ok.get_json()
    assert ok.headers["X-Auth-Subject"] == "user-42"
    assert client.post("/v1/revoke", data={"token": token}).status_code == 200
    assert actions.verify(token).status_code == 401
