"""The command line: ``token-service`` (the console script) and ``python -m token_service``, one entry point.

``dev`` and ``check-config`` are the developer's (see devserver.py). The operator commands (``api-keys``,
``signing-keys``, ``revoke``, ``revocations``, ``token-status``, ``audit``) are thin wrappers over the TokenService
methods the admin API calls, on a service built exactly as the server builds it (``load_settings(os.environ)``
then ``create_app``), so they act on the same Redis and signing-key ring as the running instances. They
need no admin key: whoever can read the service's settings (the Redis URL, the key-encryption key) holds
its data already. The audit actor is ``cli:<OS user>``. The same commands are Flask CLI commands of every
app (``flask --app wsgi api-keys list``), acting on that app's service.

Exit status: 0 done; 1 refused (``error: <description>`` on stderr, the admin API's description);
2 a bad setting (one line) or bad usage; 3 the store cannot be reached (the API's 503: retry).
Secrets: a new key's text is printed once, to stdout only; tokens and key texts are read from stdin,
never from the command line (it would land in the shell's history and in ``ps``).
"""

from __future__ import annotations

import getpass
import json
import os
import pwd
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from typing import Any, ParamSpec

import click
from flask import Flask, current_app, has_app_context
from flask.cli import ScriptInfo

from token_service import create_app
from token_service.audit import Actor
from token_service.config import ConfigError, load_settings
from token_service.devserver import EXIT_CONFIG, check_config, run_dev
from token_service.errors import InvalidRequest, ServiceError, TemporarilyUnavailable
from token_service.revocation import Revocation
from token_service.service import DEFAULT_GRACE, DEFAULT_PAGE, MAX_PAGE, TokenService, audit_filters
from token_service.stores.base import StoreUnavailable
from token_service.tokens import Verdict

EXIT_REFUSED = 1
EXIT_UNAVAILABLE = 3
MAX_STDIN = 16 * 1024
"""Bytes read from stdin at most (a token is at most 4096 characters)."""

P = ParamSpec("P")


# -- the service, errors and output -------------------------------------------------------------


NOT_SHARED = ("TOKEN_SERVICE_REDIS_URL is unset: the operator commands act on the Redis the instances share; "
              "on embedded stores they would change only this command's own, empty, process")


def _service_of(app: Flask) -> TokenService:
    service: TokenService = app.extensions["token_service"]
    if not service.stores.shared:
        raise ConfigError(NOT_SHARED)
    return service


def _service() -> TokenService:
    """The service of the Flask app running this command, else one built from the environment as the server
    builds it; ConfigError when the settings are wrong or name no shared store."""
    if has_app_context():
        return _service_of(current_app)
    info = click.get_current_context().find_object(ScriptInfo)
    if info is not None:
        return _service_of(info.load_app())
    settings = load_settings(os.environ)
    if settings.embedded:  # checked before create_app, which would log its embedded-stores warning first
        raise ConfigError(NOT_SHARED)
    return _service_of(create_app(settings, check_durability=False))  # the server's start-up warnings are not the operator's


def _actor() -> Actor:
    """``cli:<the effective OS user>``, for the audit trail."""
    try:
        user = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        user = str(os.geteuid())
    return Actor(f"cli:{user}")


def _refuse(exc: ServiceError) -> None:
    click.echo(f"error: {exc.description}", err=True)
    raise click.exceptions.Exit(EXIT_UNAVAILABLE if exc.status_code == 503 else EXIT_REFUSED)


def operation(func: Callable[P, None]) -> Callable[P, None]:
    """Run an operator command: ConfigError is one line and exit 2, ServiceError ``error: ...`` and exit 1 (3 for 503)."""

    @wraps(func)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            func(*args, **kwargs)
        except ConfigError as exc:
            click.echo(f"token-service: {exc}", err=True)
            raise click.exceptions.Exit(EXIT_CONFIG) from None
        except StoreUnavailable:
            _refuse(TemporarilyUnavailable("The revocation and key store cannot be reached; retry shortly."))
        except ServiceError as exc:
            _refuse(exc)

    return run


def json_option(func: Callable[P, None]) -> Callable[P, None]:
    """``--json``: print the admin API's JSON shape instead of a short human table."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON (the admin API's shape).")(func)


def _print_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2))


def _when(at: object) -> str:
    """A Unix time as UTC ISO 8601 (``-`` for none)."""
    if not isinstance(at, int):
        return "-"
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    lines = [list(header), *(list(row) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


def _words(values: object) -> str:
    return ",".join(str(v) for v in values) if isinstance(values, list) and values else "-"


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"limit must be a whole number from 1 to {MAX_PAGE}.")


def _next_page(next_cursor: str | None) -> None:
    if next_cursor is not None:
        click.echo(f"more: --cursor {next_cursor}")


def _read_stdin(what: str) -> str:
    """Text piped on stdin (a prompt without echo on a terminal); InvalidRequest when there is none or too much."""
    if sys.stdin.isatty():
        text = getpass.getpass(f"{what} (not echoed; end with Enter): ")
    else:
        text = sys.stdin.read(MAX_STDIN + 1)
    if len(text) > MAX_STDIN:
        raise InvalidRequest(f"stdin holds more than {MAX_STDIN} characters; expected {what}.")
    if not text.strip():
        raise InvalidRequest(f"{what} is required on stdin (it is never taken from the command line).")
    return text


def _show_new_key(metadata: dict[str, object], text: str, as_json: bool, done: str) -> None:
    """A new key's record and its text, the text printed once (to stdout only)."""
    if as_json:
        _print_json({**metadata, "key": text})
        return
    click.echo(f"{done} {metadata['type']} API key {metadata['id']}"
               f" (name {metadata['name']!r}, personas {_words(metadata['personas'])}, scopes {_words(metadata['scopes'])},"
               f" expires {_when(metadata['expires_at'])})")
    click.echo("Its text follows, shown this once (it cannot be retrieved again):")
    click.echo(text)


def _show_revocation(entry: Revocation, service: TokenService, as_json: bool) -> None:
    if as_json:
        _print_json(entry.to_dict())
        return
    until = _when(entry.expires_at) if entry.expires_at is not None else "never (kid entries stay)"
    click.echo(f"revoked {entry.type} {entry.value}: revocation {entry.id}, kept until {until}")
    if entry.type == "kid":
        signer = service.ring.signing_kid
        if signer is not None and signer != entry.value:
            click.echo(f"now signing with {signer}")
        else:
            click.echo("no successor signs: minting answers 503 until a new signing key is in place (docs/runbook.md)")


# -- the command line ---------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
def cli() -> None:
    """Persona token service: the development server, a configuration check, and the operator commands.

    The operator commands act on the service the TOKEN_SERVICE_* environment names (the same Redis and
    signing-key ring as the running instances). Exit status: 0 done, 1 refused, 2 bad setting or usage,
    3 the store cannot be reached (retry).
    """


@cli.command()
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="TCP port on 127.0.0.1.")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("run"), show_default=True,
              help="Where the generated admin key is written.")
def dev(port: int, run_dir: Path) -> None:
    """Serve on 127.0.0.1 for local development (one worker, embedded stores)."""
    raise click.exceptions.Exit(run_dev(port, run_dir, os.environ))


@cli.command("check-config")
def check_config_command() -> None:
    """Load the settings from the environment; print ok, or the error (exit 2)."""
    raise click.exceptions.Exit(check_config(os.environ))


# api-keys


@cli.group("api-keys")
def api_keys() -> None:
    """Create, list, revoke and rotate API keys."""


@api_keys.command("create")
@click.option("--type", "kind", required=True, metavar="public|secret|admin", help="The kind of key.")
@click.option("--name", help="A name for people (1 to 128 printable characters).")
@click.option("--persona", "personas", multiple=True, metavar="PERSONA_ID",
              help="A personaId the key may mint for (repeat), or '*' for all. Required for public and secret keys.")
@click.option("--scope", "scopes", multiple=True, metavar="SCOPE",
              help="A scope the key may grant (repeat; default TOKEN_SERVICE_DEFAULT_SCOPES).")
@click.option("--origin", "origins", multiple=True, metavar="ORIGIN",
              help="Public keys: an exact origin allowed to use it, like https://chat.example.com (repeat).")
@click.option("--permission", "permissions", multiple=True, metavar="introspect", help="Secret keys: a permission (repeat).")
@click.option("--expires-at", type=int, metavar="UNIX", help="When the key stops working (Unix seconds).")
@json_option
@operation
def create_api_key(kind: str, name: str | None, personas: tuple[str, ...], scopes: tuple[str, ...], origins: tuple[str, ...],
                   permissions: tuple[str, ...], expires_at: int | None, as_json: bool) -> None:
    """Create a key; its text is printed this once."""
    body: dict[str, Any] = {"type": kind}
    if name is not None:
        body["name"] = name
    for field, values in (("personas", personas), ("scopes", scopes), ("origins", origins), ("permissions", permissions)):
        if values:
            body[field] = list(values)
    if expires_at is not None:
        body["expires_at"] = expires_at
    record, text = _service().create_api_key(body, _actor())
    _show_new_key(record.metadata(), text, as_json, "created")


@api_keys.command("list")
@click.option("--limit", type=int, default=DEFAULT_PAGE, show_default=True, help=f"Keys per page (1 to {MAX_PAGE}).")
@click.option("--cursor", help="The next page: the cursor the previous page printed.")
@json_option
@operation
def list_api_keys(limit: int, cursor: str | None, as_json: bool) -> None:
    """A page of key records, in creation order (metadata only: never a key's text)."""
    _check_limit(limit)
    service = _service()
    items, next_cursor = service.list_api_keys(cursor, limit)
    if as_json:
        _print_json({"items": [key.metadata() for key in items], "next_cursor": next_cursor})
        return
    now = service.clock()
    _table(
        ("ID", "TYPE", "NAME", "PERSONAS", "SCOPES", "CREATED", "EXPIRES", "LAST USED", "STATE"),
        ((key.id, key.type, key.name or "-", _words(list(key.personas)), _words(list(key.scopes)), _when(key.created_at),
          _when(key.expires_at), _when(key.last_used_at), "revoked" if key.revoked_at is not None else (
              "live" if key.usable(now) else "expired")) for key in items),
    )
    _next_page(next_cursor)


@api_keys.command("revoke")
@click.argument("key_id", metavar="ID")
@click.option("--revoke-tokens", is_flag=True, help="Also revoke every token the key minted (the leaked-key response).")
@json_option
@operation
def revoke_api_key(key_id: str, revoke_tokens: bool, as_json: bool) -> None:
    """Revoke a key at once (its record is kept, with revoked_at)."""
    _service().delete_api_key(key_id, revoke_tokens, _actor())
    if as_json:
        _print_json({"id": key_id, "revoked": True, "revoke_tokens": revoke_tokens})
    else:
        click.echo(f"revoked API key {key_id}" + (" and every token it minted" if revoke_tokens else ""))


@api_keys.command("rotate")
@click.argument("key_id", metavar="ID")
@click.option("--grace-seconds", type=int, metavar="N",
              help=f"Seconds the old key keeps working (default {DEFAULT_GRACE}; 0 stops it at once).")
@json_option
@operation
def rotate_api_key(key_id: str, grace_seconds: int | None, as_json: bool) -> None:
    """A new key with the old one's settings; the old one expires after the grace period. The new text is printed this once."""
    body: dict[str, Any] = {} if grace_seconds is None else {"grace_seconds": grace_seconds}
    record, text = _service().rotate_api_key(key_id, body, _actor())
    if not as_json:
        grace = DEFAULT_GRACE if grace_seconds is None else grace_seconds
        click.echo(f"the old key {key_id} stops working within {grace} seconds")
    _show_new_key(record.metadata(), text, as_json, "rotated: new")


@api_keys.command("report-exposed")
@json_option
@operation
def report_exposed(as_json: bool) -> None:
    """Revoke every live secret or admin key whose full text is on stdin (one a line), as POST /v1/keys/exposed does."""
    texts = [line.strip() for line in _read_stdin("key texts, one a line").splitlines() if line.strip()]
    revoked = _service().report_exposed(texts, None)
    if as_json:
        _print_json({"revoked": revoked})
    else:
        click.echo(f"revoked {revoked} key(s)")


# signing-keys


@cli.group("signing-keys")
def signing_keys() -> None:
    """List, rotate and revoke the signing keys of the ring."""


@signing_keys.command("list")
@json_option
@operation
def list_signing_keys(as_json: bool) -> None:
    """Every key of the ring with its status (next, current, retiring, revoked) and times."""
    keys = _service().signing_keys()
    if as_json:
        _print_json({"keys": keys})
        return
    _table(("KID", "ALG", "STATUS", "CREATED", "ACTIVATES", "RETIRES"),
           ((str(k["kid"]), str(k["alg"]), str(k["status"]), _when(k["created_at"]), _when(k["activates_at"]),
             _when(k["retires_at"])) for k in keys))


@signing_keys.command("rotate")
@json_option
@operation
def rotate_signing_key(as_json: bool) -> None:
    """Stage a new key (status next): published now, signing once every verifier could have seen it."""
    entry = _service().rotate_signing_key(_actor())
    if as_json:
        _print_json(entry)
    else:
        click.echo(f"staged signing key {entry['kid']} (status {entry['status']}); it signs from {_when(entry['activates_at'])}")


@signing_keys.command("revoke")
@click.argument("kid", metavar="KID")
@click.option("--reason", help="Why (at most 256 characters).")
@json_option
@operation
def revoke_signing_key(kid: str, reason: str | None, as_json: bool) -> None:
    """The compromised-key response: every token the key signed is refused, and it signs no more."""
    service = _service()
    _show_revocation(service.revoke("kid", kid, reason, _actor()), service, as_json)


# revocations


@cli.command()
@click.option("--jti", help="One token, by its jti.")
@click.option("--token-stdin", "token_stdin", is_flag=True, help="One token, read from stdin.")
@click.option("--sub", help="Every token of this subject issued up to now.")
@click.option("--persona", "persona_id", metavar="PERSONA_ID", help="Every token of this persona issued up to now.")
@click.option("--client-id", help="Every token minted by this credential (API key id) up to now.")
@click.option("--kid", help="Every token signed by this key; the key signs no more.")
@click.option("--reason", help="Why (at most 256 characters).")
@json_option
@operation
def revoke(jti: str | None, token_stdin: bool, sub: str | None, persona_id: str | None, client_id: str | None,
           kid: str | None, reason: str | None, as_json: bool) -> None:
    """Revoke by exactly one of --jti, --token-stdin, --sub, --persona, --client-id or --kid."""
    given = [name for name, value in (("jti", jti), ("token", token_stdin or None), ("sub", sub), ("personaId", persona_id),
                                      ("client_id", client_id), ("kid", kid)) if value is not None]
    if len(given) != 1:
        raise InvalidRequest("Give exactly one of --jti, --token-stdin, --sub, --persona, --client-id or --kid.")
    rtype = given[0]
    value = _read_stdin("the token").strip() if rtype == "token" else {
        "jti": jti, "sub": sub, "personaId": persona_id, "client_id": client_id, "kid": kid}[rtype]
    service = _service()
    _show_revocation(service.revoke(rtype, value, reason, _actor()), service, as_json)


@cli.group()
def revocations() -> None:
    """List the revocations in force; lift one made by mistake."""


@revocations.command("list")
@click.option("--limit", type=int, default=DEFAULT_PAGE, show_default=True, help=f"Entries per page (1 to {MAX_PAGE}).")
@click.option("--cursor", help="The next page: the cursor the previous page printed.")
@json_option
@operation
def list_revocations(limit: int, cursor: str | None, as_json: bool) -> None:
    """A page of the revocations in force, oldest first."""
    _check_limit(limit)
    items, next_cursor = _service().list_revocations(cursor, limit)
    if as_json:
        _print_json({"items": [entry.to_dict() for entry in items], "next_cursor": next_cursor})
        return
    _table(("ID", "TYPE", "VALUE", "REVOKED", "KEPT UNTIL", "REASON"),
           ((e.id, e.type, e.value, _when(e.revoked_at), _when(e.expires_at), e.reason or "-") for e in items))
    _next_page(next_cursor)


@revocations.command("lift")
@click.argument("revocation_id", metavar="ID")
@json_option
@operation
def lift_revocation(revocation_id: str, as_json: bool) -> None:
    """Lift a revocation made by mistake (the previous one for the same target is in force again)."""
    _service().lift_revocation(revocation_id, _actor())
    if as_json:
        _print_json({"id": revocation_id, "lifted": True})
    else:
        click.echo(f"lifted revocation {revocation_id}")


# token-status


def verdict_body(verdict: Verdict) -> dict[str, Any]:
    """The verdict in the shape of ``POST /v1/admin/token-status``."""
    reasons: list[dict[str, Any]] = []
    for reason in verdict.reasons:
        item: dict[str, Any] = {"code": reason.code, "detail": reason.detail}
        if reason.revocation_id:
            item["revocation_id"] = reason.revocation_id
        reasons.append(item)
    return {"active": verdict.valid and not reasons, "header": verdict.header, "claims": verdict.raw_claims, "reasons": reasons}


@cli.command("token-status")
@json_option
@operation
def token_status(as_json: bool) -> None:
    """The full verdict on a token read from stdin (never from the command line): every reason it fails."""
    token = _read_stdin("the token").strip()
    try:
        body = verdict_body(_service().inspect(token))
    except StoreUnavailable:
        raise TemporarilyUnavailable("The revocation store cannot be reached; the verdict would be incomplete.") from None
    if as_json:
        _print_json(body)
        return
    click.echo("active" if body["active"] else "inactive")
    for reason in body["reasons"]:
        by = f" (revocation {reason['revocation_id']})" if "revocation_id" in reason else ""
        click.echo(f"  {reason['code']}: {reason['detail']}{by}")
    for label, part in (("header", body["header"]), ("claims", body["claims"])):
        if part:
            click.echo(f"{label}: " + " ".join(f"{name}={_when(value) if name in ('iat', 'nbf', 'exp') else value}"
                                               for name, value in part.items()))


# audit


EXIT_BROKEN = 1
"""``audit verify``: the chain does not hold (the first broken link is named on stdout)."""


@cli.group()
def audit() -> None:
    """Read the audit log and check its hash chain (docs/operations/audit.md)."""


@audit.command("verify")
@json_option
@operation
def verify_audit(as_json: bool) -> None:
    """Check the audit log's hash chain from its anchor to its newest record: OK and the count, or the first
    broken link (record id, and hash mismatch, prev mismatch, missing or unreadable) with exit status 1."""
    result = _service().verify_audit()
    broken = result.broken
    if as_json:
        _print_json({"ok": broken is None, "checked": result.checked,
                     "broken": None if broken is None else {"record_id": broken.record_id, "problem": broken.problem,
                                                            "detail": broken.detail}})
    elif broken is None:
        click.echo(f"OK: {result.checked} record(s), chained from the anchor to the newest")
    else:
        click.echo(f"BROKEN at {broken.record_id or 'the newest end'}: {broken.problem}: {broken.detail}")
        click.echo(f"({result.checked} record(s) before it verified)")
    if broken is not None:
        raise click.exceptions.Exit(EXIT_BROKEN)


@audit.command("list")
@click.option("--since", metavar="TIME", help="Records at or after this time: Unix seconds or RFC 3339 (2026-12-04T22:00:00Z).")
@click.option("--action", metavar="NAME", help="Only this action (an exact dotted name, like api_key.create).")
@operation
def list_audit(since: str | None, action: str | None) -> None:
    """Every record kept, oldest first, as JSON lines: the API's fields and the chain's (seq, prev, hash)."""
    audit_filters(since, action)  # a malformed filter is refused before the store is reached
    service = _service()
    cursor: str | None = None
    while True:
        items, cursor = service.list_audit(since, action, cursor, MAX_PAGE)
        for record in items:
            click.echo(json.dumps({**record.item(), "seq": record.seq, "prev": record.prev, "hash": record.hash},
                                  separators=(",", ":")))
        if cursor is None:
            return


OPERATOR_COMMANDS: tuple[click.Command, ...] = (api_keys, signing_keys, revoke, revocations, token_status, audit)


def register_commands(app: Flask) -> None:
    """Add the operator commands to ``app.cli`` (``flask --app wsgi api-keys list``)."""
    for command in OPERATOR_COMMANDS:
        app.cli.add_command(command)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; the exit status."""
    try:
        cli.main(args=list(argv) if argv is not None else None, standalone_mode=True)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        click.echo(exc.code, err=True)
        return 1
    return 0  # pragma: no cover  (standalone click always exits)


if __name__ == "__main__":
    sys.exit(main())
