"""What the deployment tests share: the Dockerfile read with Docker's own parser, gunicorn's settings as the
config file gives them, the rules for setting names and secret-looking names, and the secret files that
deploy/secrets/generate.sh writes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import fields
from functools import cache
from pathlib import Path
from typing import Any

import dockerfile

from token_service import config

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DEPLOY = ROOT / "deploy"
SECRET_WORDS = re.compile(r"KEY|SECRET|PASSWORD|PASSWD|PASSPHRASE|TOKEN|PEPPER|CREDENTIAL|PRIVATE", re.IGNORECASE)
"""Names that announce a secret: such a setting must come from a file (``_FILE``), never inline."""
URL_WITH_PASSWORD = re.compile(r"[a-z+]+://[^/\s:@]*:[^/\s@]+@", re.IGNORECASE)
SETTINGS = frozenset(f.name for f in fields(config.Settings))
FILE_SETTINGS = frozenset(config._SECRET_SETTINGS)  # noqa: SLF001 - the settings that accept ..._FILE


def secret_looking(name: str) -> bool:
    """True when a variable's name announces a secret (the TOKEN_SERVICE_ prefix itself does not count)."""
    return SECRET_WORDS.search(name.removeprefix(config.PREFIX)) is not None


def parsed_dockerfile() -> tuple[dockerfile.Command, ...]:
    """The Dockerfile's instructions, as BuildKit's parser reads them (continuations joined, JSON forms decoded)."""
    return tuple(dockerfile.parse_file(str(DOCKERFILE)))


def instructions(name: str) -> list[dockerfile.Command]:
    """Every instruction ``name`` (``USER``, ``COPY``, ...) of the Dockerfile, in order."""
    return [c for c in parsed_dockerfile() if c.cmd.upper() == name.upper()]


def image_command() -> list[str]:
    """The image's command: its CMD (exec form), after its ENTRYPOINT if there is one."""
    [cmd] = instructions("CMD")[-1:]
    entry = instructions("ENTRYPOINT")[-1:]
    return [*(entry[0].value if entry else ()), *cmd.value]


def is_setting(env_name: str) -> bool:
    """True when ``env_name`` is a TOKEN_SERVICE_* setting of token_service/config.py (``_FILE`` only where allowed)."""
    if not env_name.startswith(config.PREFIX):
        return False
    key = env_name[len(config.PREFIX):].lower()
    if key.endswith("_file") and key[:-5] in FILE_SETTINGS:
        return True
    return key in SETTINGS


@cache
def gunicorn_settings(path: str = "config/gunicorn.conf.py") -> dict[str, Any]:
    """The plain settings (numbers, strings, booleans, None) and the hook names a gunicorn config file defines,
    read in a subprocess (the file sets environment variables as it loads)."""
    probe = (
        "import inspect, json, runpy, sys\n"
        "names = runpy.run_path(sys.argv[1])\n"
        "out = {k: v for k, v in names.items() if not k.startswith('_') and isinstance(v, (int, float, str, bool, type(None)))}\n"
        "out['hooks'] = sorted(k for k, v in names.items() if not k.startswith('_') and inspect.isfunction(v))\n"
        "print(json.dumps(out))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PROMETHEUS_MULTIPROC_DIR": "/nonexistent-for-the-probe"}
    result = subprocess.run([sys.executable, "-c", probe, str(ROOT / path)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    values: dict[str, Any] = json.loads(result.stdout)
    return values


def generate_secrets(directory: Path) -> dict[str, str]:
    """Runs deploy/secrets/generate.sh into ``directory``; {file name: contents}."""
    result = subprocess.run(["sh", str(DEPLOY / "secrets" / "generate.sh"), str(directory)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return {path.name: path.read_text() for path in directory.iterdir()}
