"""A tiny static server for the browser example (stdlib only): serves index.html, iframe.html, chat.js,
chat.css and a generated config.js, each with a Content-Security-Policy that lets the page talk to
itself, the token service and the gateway only, and be framed by its own origin only.

    python examples/browser/serve.py --port 8090 --service http://127.0.0.1:8000 --key pk_...

Other options: --gateway ORIGIN when the gateway is not the page's own origin (by default the page is
served through nginx, so the gateway is 'self'), --persona ID (default support-bot), --bind ADDRESS,
--provider-token-url URL for the identity-provider variant: the page gets the user's provider token
with GET URL (JSON {"id_token": ...}, CORS for the page's origin) and mints with it instead of the
public key (always without --key; with --key only on ?provider=1). The URL's origin joins connect-src.
"""

from __future__ import annotations

import argparse
import json
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/iframe.html": ("iframe.html", "text/html; charset=utf-8"),
    "/chat.js": ("chat.js", "text/javascript; charset=utf-8"),
    "/chat.css": ("chat.css", "text/css; charset=utf-8"),
}
ORIGIN_RE = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?\Z")
URL_ORIGIN_RE = re.compile(r"^(https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?)/[!-~]*\Z")  # an origin and a path


def content_security_policy(service: str, gateway: str | None, provider: str | None = None) -> str:
    """default-src 'self' (no inline script or style, nothing from elsewhere); connect-src adds the token
    service, the gateway and the identity provider's origin; frame-ancestors 'self' lets only this
    origin embed the page."""
    connect = " ".join(["'self'", service] + [origin for origin in (gateway, provider) if origin])
    return (f"default-src 'self'; connect-src {connect}; frame-ancestors 'self'; "
            "base-uri 'none'; form-action 'self'; object-src 'none'")


def config_js(service: str, gateway: str | None, key: str, persona: str, provider_token_url: str = "") -> bytes:
    """window.CHAT_CONFIG for chat.js (a public key may be in a page: it is restricted to its origins)."""
    config = {"serviceUrl": service, "gatewayUrl": gateway or "", "publicKey": key, "personaId": persona,
              "providerTokenUrl": provider_token_url}
    return f"window.CHAT_CONFIG = {json.dumps(config)};\n".encode()


def make_handler(service: str, gateway: str | None, key: str, persona: str,
                 provider_token_url: str = "") -> type[BaseHTTPRequestHandler]:
    match = URL_ORIGIN_RE.match(provider_token_url)
    provider = match.group(1) if match else None
    csp = content_security_policy(service, gateway, provider)
    config = config_js(service, gateway, key, persona, provider_token_url)

    class Handler(BaseHTTPRequestHandler):
        server_version = "chat-example"
        sys_version = ""

        def _send(self, status: int, body: bytes, content_type: str, head: bool) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Security-Policy", csp)
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _answer(self, head: bool) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/config.js":
                self._send(200, config, "text/javascript; charset=utf-8", head)
            elif path in FILES:
                name, content_type = FILES[path]
                self._send(200, (HERE / name).read_bytes(), content_type, head)
            else:
                self._send(404, b"not found\n", "text/plain; charset=utf-8", head)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._answer(head=False)

        def do_HEAD(self) -> None:  # noqa: N802
            self._answer(head=True)

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--service", required=True, help="the token service's origin, like http://127.0.0.1:8000")
    parser.add_argument("--gateway", default=None, help="the gateway's origin when it is not the page's own")
    parser.add_argument("--key", default="", help="a public key (pk_...) allowed for the page's origin")
    parser.add_argument("--provider-token-url", default="",
                        help="the identity provider variant: where the page gets the user's provider token")
    parser.add_argument("--persona", default="support-bot")
    args = parser.parse_args()
    for name in ("service", "gateway"):
        value = getattr(args, name)
        if value is not None and not ORIGIN_RE.match(value):
            parser.error(f"--{name} must be an origin like http://127.0.0.1:8000 (no path)")
    if args.provider_token_url and not URL_ORIGIN_RE.match(args.provider_token_url):
        parser.error("--provider-token-url must be an http(s) URL like http://127.0.0.1:8100/token")
    if not args.provider_token_url and not args.key:
        parser.error("give --key, --provider-token-url or both")
    if args.key and not args.key.startswith("pk_"):
        parser.error("--key must be a public key (pk_...): never put a secret key in a page")
    handler = make_handler(args.service, args.gateway, args.key, args.persona, args.provider_token_url)
    server = ThreadingHTTPServer((args.bind, args.port), handler)
    server.daemon_threads = True
    print(f"serving the chat page on http://{args.bind}:{server.server_address[1]}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
