"""Third-party adapters: the worked example in examples/custom_adapter, installed by pip in the test
(a wheel built here), loaded through its entry point and by dotted path; and the chain's refusals."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ADMIN_KEY, assert_error, with_settings
from token_service import Settings, create_app
from token_service.auth import AdapterContext, build_chain, register
from token_service.config import ConfigError, load_settings
from token_service.stores import stores_from_url

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_adapter"
PROXY_SECRET = "proxy-shared-secret-0123456789abcdef"
OPTIONS = {"demo_header": {"proxy_secret": PROXY_SECRET, "personas": ["support-bot"], "scopes": ["chat:read"]}}


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_wheel(out: Path, entry_points: str = "[token_service.auth_adapters]\ndemo_header = persona_header_auth:HeaderAdapter\n") -> Path:
    """A wheel of the example package (what `python -m build` would make), with its entry point."""
    dist = "persona_header_auth-0.1.0.dist-info"
    files = {
        "persona_header_auth/__init__.py": (EXAMPLE / "persona_header_auth" / "__init__.py").read_bytes(),
        f"{dist}/METADATA": b"Metadata-Version: 2.1\nName: persona-header-auth\nVersion: 0.1.0\n",
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist}/entry_points.txt": entry_points.encode(),
    }
    record = [_record_line(name, data) for name, data in files.items()] + [f"{dist}/RECORD,,"]
    wheel = out / "persona_header_auth-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr(f"{dist}/RECORD", "\n".join(record) + "\n")
    return wheel


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The example package installed by pip into a private site directory on sys.path."""
    site = tmp_path / "site"
    wheel = build_wheel(tmp_path)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=120)
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("persona_header_auth", None)


def _app(settings: Settings, clock: Any, adapters: tuple[str, ...]) -> Any:
    return create_app(with_settings(settings, auth_adapters=adapters, adapter_options=OPTIONS), clock=clock)


def _mint(client: Any, headers: dict[str, str]) -> Any:
    return client.post("/v1/tokens", json={"personaId": "support-bot", "scopes": ["chat:read"]}, headers=headers)


@pytest.mark.parametrize("name", ["demo_header", "persona_header_auth:HeaderAdapter"])
def test_an_installed_adapter_mints_by_entry_point_or_dotted_path(installed, settings, clock, name):
    client = _app(settings, clock, ("api_key", name)).test_client()
    response = _mint(client, {"X-Authenticated-User": "alice@example.com", "X-Proxy-Secret": PROXY_SECRET})
    assert response.status_code == 200, response.get_json()
    status = client.post("/v1/admin/token-status", json={"token": response.get_json()["token"]},
                         headers={"Authorization": f"Bearer {ADMIN_KEY}"}).get_json()
    assert status["claims"]["sub"] == "alice@example.com" and status["claims"]["client_id"] == "demo_header"
    assert response.get_json()["scope"] == "chat:read"  # from the adapter's own options


def test_the_adapter_refuses_and_passes_as_configured(installed, settings, clock):
    client = _app(settings, clock, ("api_key", "demo_header")).test_client()
    assert_error(_mint(client, {"X-Authenticated-User": "alice", "X-Proxy-Secret": "wrong"}), 401, "unauthorized")
    assert_error(_mint(client, {}), 401, "unauthorized")  # no header: the adapter passes, nobody decides
    assert_error(client.post("/v1/tokens", json={"personaId": "other-bot", "scopes": ["chat:read"]},
                             headers={"X-Authenticated-User": "alice", "X-Proxy-Secret": PROXY_SECRET}), 403, "access_denied")
    assert_error(client.get("/v1/admin/api-keys", headers={"X-Authenticated-User": "alice", "X-Proxy-Secret": PROXY_SECRET}),
                 403, "access_denied")


def test_the_adapter_options_come_from_the_toml_file(installed, tmp_path, signing_key_file):
    path = tmp_path / "service.toml"
    path.write_text(
        'auth_adapters = ["api_key", "demo_header"]\n'
        f'signing_key_file = "{signing_key_file}"\n'
        "[adapters.demo_header]\n"
        f'proxy_secret = "{PROXY_SECRET}"\n'
        'personas = ["*"]\n'
    )
    settings = load_settings({"TOKEN_SERVICE_CONFIG": str(path)})
    client = create_app(settings).test_client()
    response = client.post("/v1/tokens", json={"personaId": "any-bot"},
                           headers={"X-Authenticated-User": "bob", "X-Proxy-Secret": PROXY_SECRET})
    assert response.status_code == 200, response.get_json()


def test_an_adapter_refusing_its_options_stops_start_up_with_one_line(installed, settings, clock):
    bad = with_settings(settings, auth_adapters=("api_key", "demo_header"), adapter_options={"demo_header": {"proxy_secret": "short"}})
    with pytest.raises(ConfigError) as caught:
        create_app(bad, clock=clock)
    assert "demo_header" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(("name", "expected"), [
    ("no_such_adapter", "unknown adapter 'no_such_adapter'"),
    ("no_such_module:Thing", "cannot import 'no_such_module'"),
    ("token_service.clock:NoSuchClass", "has no 'NoSuchClass'"),
    ("token_service.clock:system_clock", "refused its settings"),
])
def test_adapters_that_cannot_be_built_stop_start_up_with_one_line(settings, clock, name, expected):
    with pytest.raises(ConfigError) as caught:
        create_app(with_settings(settings, auth_adapters=("api_key", name)), clock=clock)
    assert expected in str(caught.value) and "\n" not in str(caught.value)


def test_a_plugin_that_fails_to_import_stops_start_up(tmp_path, monkeypatch, settings, clock):
    site = tmp_path / "site"
    wheel = build_wheel(tmp_path, "[token_service.auth_adapters]\nbroken = persona_header_auth_missing:Nothing\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=120)
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(ConfigError) as caught:
        create_app(with_settings(settings, auth_adapters=("api_key", "broken")), clock=clock)
    assert "'broken' failed to load" in str(caught.value)


def test_the_registry_refuses_a_second_adapter_of_the_same_name():
    with pytest.raises(ValueError):
        register("api_key", lambda context: None)  # type: ignore[arg-type,return-value]


def test_the_first_adapter_that_decides_wins(settings, clock):
    class Passes:
        name = "passes"

        def authenticate(self, request):
            return None

    class Refuses:
        name = "refuses"
        calls = 0

        def authenticate(self, request):
            Refuses.calls += 1
            from token_service.auth.base import AuthenticationFailed

            raise AuthenticationFailed("no")

    stores = stores_from_url(None, clock)
    context = AdapterContext(settings=settings, stores=stores, clock=clock)
    chain = build_chain(("api_key",), context)
    from token_service.auth import AuthChain
    from token_service.auth.base import AuthenticationFailed, AuthRequest

    ordered = AuthChain([Passes(), *chain.adapters, Refuses()])
    admin = AuthRequest("GET", "/", {"authorization": f"Bearer {ADMIN_KEY}"})
    assert ordered.authenticate(admin).is_admin  # api_key decided before Refuses was asked
    assert Refuses.calls == 0
    with pytest.raises(AuthenticationFailed):
        ordered.authenticate(AuthRequest("GET", "/", {}))
    assert Refuses.calls == 1
