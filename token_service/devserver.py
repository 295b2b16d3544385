"""The local development server: ``python -m token_service dev [--port 8000] [--run-dir run]``.

It runs the embedded default (unless the environment says otherwise) under gunicorn with one worker
on 127.0.0.1. Without a configured admin key it generates one, writes it to ``<run-dir>/admin-key``
(mode 0600) and hands it to the server through ``TOKEN_SERVICE_ADMIN_KEY_FILE``: the key itself is
never printed. It prints a banner and a shell walk-through (between two marker lines, so that tests
can run it) from creating an API key to revoking a token, then becomes gunicorn (``exec``).
"""

from __future__ import annotations

import os
import secrets
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path

from token_service.config import PREFIX, ConfigError, Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
GUNICORN_CONFIG = ROOT / "config" / "gunicorn.conf.py"
WALKTHROUGH_BEGIN = "# >>> token-service walk-through >>>"
WALKTHROUGH_END = "# <<< token-service walk-through <<<"
EXIT_CONFIG = 2

_JSON_FIELD = "python3 -c 'import json,sys; print(json.load(sys.stdin)[\"{field}\"])'"


def write_admin_key(run_dir: Path) -> Path:
    """Generate an admin key and write it to ``run_dir/admin-key`` (0600, replaced atomically)."""
    run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = run_dir / "admin-key"
    partial = run_dir / f".admin-key.{secrets.token_hex(8)}"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, (secrets.token_urlsafe(32) + "\n").encode("ascii"))
    finally:
        os.close(fd)
    os.replace(partial, path)
    return path


def _shown_path(path: Path) -> str:
    """``path`` as the user should type it: relative to the working directory when under it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def admin_line(environ: Mapping[str, str], key_file: Path | None) -> str:
    """The walk-through's ``ADMIN=...`` line: reads the key from where it is, never spells it out."""
    if key_file is not None:
        return f"ADMIN=$(cat {shlex.quote(_shown_path(key_file))})"
    configured_file = environ.get(PREFIX + "ADMIN_KEY_FILE")
    if configured_file:
        return f"ADMIN=$(cat {shlex.quote(configured_file)})"
    if environ.get(PREFIX + "ADMIN_KEY"):
        return f'ADMIN="${PREFIX}ADMIN_KEY"    # the admin key this server was started with'
    return "ADMIN='<the admin_key of your TOKEN_SERVICE_CONFIG file>'"


def walkthrough(base_url: str, admin: str) -> str:
    """A shell session, ready to paste, from creating a secret key to seeing its revoked token refused."""
    key = _JSON_FIELD.format(field="key")
    token = _JSON_FIELD.format(field="token")
    lines = [
        WALKTHROUGH_BEGIN,
        f"BASE={base_url}",
        admin,
        "# 1. create a secret API key for the persona support-bot (its text is shown only in this answer)",
        'SK=$(curl -s -X POST "$BASE/v1/admin/api-keys" -H "Authorization: Bearer $ADMIN" \\',
        "  -H 'Content-Type: application/json' \\",
        """  -d '{"type": "secret", "name": "walk-through", "personas": ["support-bot"], "scopes": ["chat:read", "chat:write"]}' \\""",
        f"  | {key})",
        "# 2. mint a token for the persona support-bot on behalf of the end user user-42",
        'TOKEN=$(curl -s -X POST "$BASE/v1/tokens" -H "Authorization: Bearer $SK" \\',
        """  -H 'Content-Type: application/json' -d '{"personaId": "support-bot", "sub": "user-42"}' \\""",
        f"  | {token})",
        "# 3. verify it as a gateway does (200, with X-Auth-* headers for the upstream)",
        'curl -si "$BASE/v1/verify?personaId=support-bot" -H "Authorization: Bearer $TOKEN"; echo',
        "# 4. revoke it, as a browser's logout does (possession of the token is enough)",
        'curl -s -X POST "$BASE/v1/revoke" --data-urlencode "token=$TOKEN"; echo',
        "# 5. verify again: 401 invalid_token",
        'curl -si "$BASE/v1/verify?personaId=support-bot" -H "Authorization: Bearer $TOKEN"; echo',
        WALKTHROUGH_END,
    ]
    return "\n".join(lines)


def banner(base_url: str, settings: Settings, key_file: Path | None, workers: int) -> str:
    """What the developer is running, in a few lines."""
    stores = "embedded (one process; nothing survives a restart)" if settings.embedded else "shared Redis (TOKEN_SERVICE_REDIS_URL)"
    signing = f"{settings.signing_alg} from {settings.signing_key_file}" if settings.signing_key_file else (
        f"{settings.signing_alg}, generated at start-up (tokens die with the process)"
    )
    if key_file is not None:
        admin = f"generated, in {_shown_path(key_file)} (mode 0600; new at every start)"
    else:
        admin = "as configured"
    return "\n".join([
        f"token-service dev server: {base_url}  (gunicorn, {workers} worker, loopback only)",
        f"  issuer:      {settings.issuer}",
        f"  stores:      {stores}",
        f"  signing key: {signing}",
        f"  admin key:   {admin}",
        "",
        "Try it from another shell (needs curl and python3):",
        "",
    ])


def gunicorn_argv(port: int) -> list[str]:
    """The gunicorn command line: the venv's gunicorn next to this interpreter, else ``python -m gunicorn``."""
    args = ["-c", str(GUNICORN_CONFIG), "--workers", "1", "--bind", f"127.0.0.1:{port}", "wsgi:app"]
    script = Path(sys.executable).parent / "gunicorn"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script), *args]
    return [sys.executable, "-m", "gunicorn", *args]


def run_dev(port: int, run_dir: Path, environ: Mapping[str, str]) -> int:
    """Prepare the environment, print the banner and walk-through, and exec gunicorn (returns only on error)."""
    env = dict(environ)
    try:
        settings = load_settings(env)
    except ConfigError as exc:
        print(f"token-service: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    key_file: Path | None = None
    if settings.admin_key is None:
        env.pop(PREFIX + "ADMIN_KEY", None)  # set but empty: it would clash with _FILE
        try:
            key_file = write_admin_key(run_dir.resolve())
        except OSError as exc:
            print(f"token-service: cannot write the admin key under {str(run_dir)!r} ({exc.strerror})", file=sys.stderr)
            return EXIT_CONFIG
        env[PREFIX + "ADMIN_KEY_FILE"] = str(key_file)
    if PREFIX + "ISSUER" not in env and settings.issuer == Settings().issuer and port != 8000:
        env[PREFIX + "ISSUER"] = f"http://localhost:{port}"  # so that the metadata's URLs point here
    try:
        settings = load_settings(env)
    except ConfigError as exc:
        print(f"token-service: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    # the app and wsgi.py are imported from the checkout, wherever the command is run from
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)

    base_url = f"http://127.0.0.1:{port}"
    print(banner(base_url, settings, key_file, 1))
    print(walkthrough(base_url, admin_line(environ, key_file)))
    print(flush=True)
    sys.stderr.flush()
    argv = gunicorn_argv(port)
    os.execvpe(argv[0], argv, env)  # noqa: S606  (a fixed argument list, no shell)
    return 0  # pragma: no cover  (exec does not return)


def check_config(environ: Mapping[str, str]) -> int:
    """Load the settings (and a mounted signing key) as start-up would; print ok or the one-line error."""
    try:
        settings = load_settings(environ)
        if settings.signing_key_file:
            from token_service import mounted_key

            mounted_key(settings)
    except ConfigError as exc:
        print(f"token-service: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print("ok")
    return 0


__all__ = ["run_dev", "check_config", "walkthrough", "WALKTHROUGH_BEGIN", "WALKTHROUGH_END"]
