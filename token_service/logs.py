"""Log output: one handler on the ``token_service`` logger, JSON lines (python-json-logger) or text.

Every logger of the package (``token_service.access``, ``token_service.audit``, ``token_service.web``...)
writes through it. Structured fields are passed as ``extra``: the JSON formatter writes them as members,
the text formatter appends them as ``key=value``. See docs/operations/observability.md.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import sys
import time
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

ROOT = "token_service"
ACCESS = "token_service.access"
RECORD = "record"
"""``extra={RECORD: {...}}``: a structured record (an audit record) whose message is that record as compact JSON;
the JSON formatter writes its members at the top level of the line instead of the message."""
_STANDARD = frozenset(RESERVED_ATTRS) | {"message", "asctime", "taskName", RECORD}
_IN_MESSAGE = _STANDARD | {"method", "route", "status", "latency_ms"}  # the request line's message says them already


class JsonLines(JsonFormatter):
    """One compact JSON object per line: ``time`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger``,
    ``message``, then the record's structured fields. A line logged with ``extra={RECORD: {...}}`` (the audit
    records) has that record's members in place of ``message``, so ``"action":"api_key.create"`` reads the same
    in both formats (the text format's message is the same compact JSON)."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s %(message)s",
                         rename_fields={"levelname": "level", "name": "logger"}, json_ensure_ascii=False,
                         json_serializer=functools.partial(json.dumps, separators=(",", ":")))

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        """``time`` first, then python-json-logger's fields; a structured record's members instead of its message."""
        log_data["time"] = _utc(record.created)
        super().add_fields(log_data, record, message_dict)
        structured = record.__dict__.get(RECORD)
        if isinstance(structured, dict):
            log_data.pop("message", None)
            log_data.pop(RECORD, None)
            log_data.update(structured)


class TextLines(logging.Formatter):
    """``time level logger message key=value ...``: for a developer's terminal."""

    def format(self, record: logging.LogRecord) -> str:
        """The line of ``record``; structured fields appended in the order they were given."""
        line = f"{_utc(record.created)} {record.levelname} {record.name} {record.getMessage()}"
        skip = _IN_MESSAGE if record.name == ACCESS else _STANDARD
        extra = [f"{k}={v}" for k, v in record.__dict__.items() if k not in skip and v is not None]
        if extra:
            line += " " + " ".join(extra)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        return line


def _utc(created: float) -> str:
    seconds = int(created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int((created - seconds) * 1000):03d}Z"


class _OurHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler configure() installs (told apart from handlers that tests or embedders add)."""


def configure(level: str, json_lines: bool) -> None:
    """Install (or re-format) the package's handler on stderr at ``level``."""
    root = logging.getLogger(ROOT)
    formatter: logging.Formatter = JsonLines() if json_lines else TextLines()
    ours = [h for h in root.handlers if isinstance(h, _OurHandler)]
    if ours:
        for handler in ours:
            handler.setFormatter(formatter)
    elif not root.handlers:
        handler = _OurHandler(sys.stderr)
        handler.setFormatter(formatter)
        root.addHandler(handler)
        root.propagate = False
    root.setLevel(level)


@functools.lru_cache(maxsize=4096)
def client_address(address: str | None, mode: str) -> str | None:
    """``address`` as the request log keeps it: ``full``; ``truncated`` to its IPv4 /24 or IPv6 /48 network
    (``203.0.113.0/24``); ``off``: None."""
    if mode == "off" or not address:
        return None
    if mode == "full":
        return address
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None  # not an address (a unix socket's peer): nothing personal to keep
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))
