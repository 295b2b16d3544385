"""The Dockerfile (issue 8, item 7), read with BuildKit's own parser (the ``dockerfile`` package): a numeric
non-root USER before the command, a HEALTHCHECK on /healthz, no secret in ENV or ARG, gunicorn with the config
file as the command, every COPY source in the build context, requirements installed with --require-hashes.

Docker cannot run here; tests/deploy/test_compose.py runs the image's command itself outside a container."""

from __future__ import annotations

import fnmatch
import re
import shlex

from tests.deploy.support import (
    ROOT,
    URL_WITH_PASSWORD,
    gunicorn_settings,
    image_command,
    instructions,
    parsed_dockerfile,
    secret_looking,
)


def test_the_parser_reads_continuations_and_exec_forms():
    """Not vacuous: the multi-line instructions come back whole, the JSON forms decoded."""
    [healthcheck] = instructions("HEALTHCHECK")
    assert healthcheck.end_line > healthcheck.start_line and healthcheck.json
    env = instructions("ENV")
    assert env and any(c.end_line > c.start_line for c in env)
    assert [c.cmd.upper() for c in parsed_dockerfile()][0] == "FROM"


def test_the_service_runs_as_a_numeric_non_root_user_set_before_its_command():
    commands = parsed_dockerfile()
    cmd_at = max(i for i, c in enumerate(commands) if c.cmd.upper() in ("CMD", "ENTRYPOINT"))
    users = [(i, c) for i, c in enumerate(commands) if c.cmd.upper() == "USER"]
    assert users, "no USER: the container would run as root"
    last_at, last = users[-1]
    assert last_at < cmd_at
    # numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd
    match = re.fullmatch(r"([0-9]+)(?::([0-9]+))?", last.value[0])
    assert match is not None, f"USER {last.value[0]} is not numeric uid[:gid]"
    assert int(match.group(1)) != 0 and (match.group(2) is None or int(match.group(2)) != 0)


def test_the_healthcheck_asks_healthz_on_the_served_port():
    [healthcheck] = instructions("HEALTHCHECK")
    assert healthcheck.value[0].upper() == "CMD" and healthcheck.json  # exec form: no shell needed
    probe = " ".join(healthcheck.value[1:])
    [url] = re.findall(r"http://[^'\" ]+", probe)
    assert url.endswith("/healthz")  # liveness: a Redis outage must not make Docker call the container unhealthy
    port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]
    exposed = {v.split("/")[0] for c in instructions("EXPOSE") for v in c.value}
    assert port in exposed and gunicorn_settings()["bind"].endswith(f":{port}")
    flags = dict(f.lstrip("-").split("=", 1) for f in healthcheck.flags)
    assert {"interval", "timeout", "retries"} <= flags.keys()
    assert int(flags["timeout"].rstrip("s")) < int(flags["interval"].rstrip("s"))


def test_no_secret_is_baked_into_env_or_arg():
    for command in instructions("ENV") + instructions("ARG"):
        values = list(command.value)
        names = values[0::2] if command.cmd.upper() == "ENV" else [v.split("=", 1)[0] for v in values]
        for name in names:
            assert not secret_looking(name), f"{command.original!r}: pass {name} at run time, as a file"
        assert not URL_WITH_PASSWORD.search(command.original), command.original


def test_the_command_is_gunicorn_with_the_config_file_in_exec_form():
    [cmd] = instructions("CMD")
    assert cmd.json, "shell form would run gunicorn under sh, which does not pass SIGTERM on: no graceful shutdown"
    assert not instructions("ENTRYPOINT")
    assert image_command() == ["gunicorn", "-c", "config/gunicorn.conf.py", "wsgi:app"]
    stop = instructions("STOPSIGNAL")
    assert not stop or stop[-1].value[0] in ("SIGTERM", "15")  # gunicorn's graceful shutdown signal


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps ``path`` (a file or directory of the context) out; the last match wins."""
    ignored = False
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        body = body.strip("/")
        if any(fnmatch.fnmatch(p, body) or (body.startswith("**/") and fnmatch.fnmatch(p.split("/")[-1], body[3:]))
               for p in prefixes):
            ignored = not negate
    return ignored


def test_every_copy_source_exists_and_is_in_the_build_context():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    copies = instructions("COPY") + instructions("ADD")
    assert copies
    for command in copies:
        assert not any(f.startswith("--from") for f in command.flags)  # one stage: every source is in the repo
        for source in command.value[:-1]:
            assert (ROOT / source).exists(), f"{command.original}: {source} does not exist"
            assert not _ignored(source, patterns), f"{command.original}: .dockerignore keeps {source} out of the context"
    assert _ignored("deploy/secrets/admin-key", patterns)  # the checker can say no: secrets never reach a build
    assert _ignored(".venv", patterns)


def test_requirements_are_installed_with_their_hashes():
    installs = [c for c in instructions("RUN") if "pip install" in " ".join(c.value)]
    assert installs
    for command in installs:
        words = shlex.split(" ".join(command.value))
        assert "--require-hashes" in words, command.original
        assert words[words.index("-r") + 1] == "requirements.txt"
    copied = [v for c in instructions("COPY") for v in c.value[:-1]]
    assert "requirements.txt" in copied
    # and requirements.txt is hash-pinned: every requirement is name==version with at least one hash
    entries = re.split(r"\n(?=[A-Za-z0-9])", (ROOT / "requirements.txt").read_text())
    requirements = [e for e in entries if e.strip() and not e.startswith("#")]
    assert requirements
    for entry in requirements:
        assert re.match(r"^[A-Za-z0-9._-]+==[^ ;\\]+", entry), entry.splitlines()[0]
        assert "--hash=sha256:" in entry, entry.splitlines()[0]


def test_the_top_level_gunicorn_conf_gives_the_config_files_settings():
    """The image copies gunicorn.conf.py too: gunicorn reads it when a command overrides CMD without -c. It must
    be exactly config/gunicorn.conf.py's settings and hooks (the start-up checks included)."""
    assert gunicorn_settings("gunicorn.conf.py") == gunicorn_settings("config/gunicorn.conf.py")
    assert "on_starting" in gunicorn_settings("gunicorn.conf.py")["hooks"]
