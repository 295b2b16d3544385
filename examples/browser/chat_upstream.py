"""The protected chat application behind the gateway, for the browser example (stdlib only).

    python examples/browser/chat_upstream.py --port 9000

POST /chat/<persona>/messages with {"message": "..."} answers {"reply": "...", "subject": ...}; the
subject is the X-Auth-Subject header nginx set from the token service's answer (the anonymous
anon:... subject of a public key's token). GET /healthz answers 200 (nginx's public route).
It trusts X-Auth-* only because nothing but the gateway can reach it: bind it to loopback.
"""

from __future__ import annotations

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 16 * 1024


class Handler(BaseHTTPRequestHandler):
    server_version = "chat-upstream"
    sys_version = ""

    def _json(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == "/healthz":
            self._json(200, {"status": "ok"})
        else:
            self._json(404, {"error": "not_found"})

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._json(413, {"error": "payload_too_large"})
            return
        try:
            message = str(json.loads(self.rfile.read(length) or b"{}").get("message", ""))
        except (ValueError, AttributeError):
            self._json(400, {"error": "invalid_request"})
            return
        persona = self.headers.get("X-Auth-Persona", "")
        self._json(200, {"reply": f"{persona} received: {message}", "subject": self.headers.get("X-Auth-Subject", "")})

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.bind, args.port), Handler)
    server.daemon_threads = True
    print(f"chat upstream on http://{args.bind}:{server.server_address[1]}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
