"""The documentation's links and metric names are real: every relative Markdown link of README.md and
docs/**/*.md points at a file that exists (and, for a Markdown file, at one of its headings when it names an
anchor, slugged as GitHub does), docs/README.md indexes every page under docs/, and every ``token_service_*``
metric a page under docs/ names is one a live scrape of the service shows."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from token_service import Settings, create_app

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted([ROOT / "README.md", *DOCS.rglob("*.md")])
ADMIN_KEY = "docs-links-bootstrap-admin-key-0123456789"

FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(?!`)(?:(?!\n[ \t]*\n).)+?(?<!`)\1(?!`)", re.DOTALL)  # not across a blank line
LINK = re.compile(r"!?\[((?:[^\[\]]|\[[^\]]*\])*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
METRIC = re.compile(r"\btoken_service_[a-z0-9_]+\b")
SUFFIXES = {"counter": ("_total",), "histogram": ("", "_bucket", "_sum", "_count"), "gauge": ("",)}


def prose(markdown: str) -> str:
    """The text outside fenced code blocks and code spans (code is not rendered as links or headings)."""
    without_fences = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), markdown)
    return CODE_SPAN.sub(lambda m: "code" + "\n" * m.group(0).count("\n"), without_fences)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: link text kept, markup dropped, lower case, punctuation other
    than ``-`` and ``_`` removed, spaces to hyphens."""
    text = LINK.sub(lambda m: m.group(1), heading)
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings (headings in code blocks do not count); a repeated heading
    gets ``-1``, ``-2``... as on GitHub."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    for match in HEADING.finditer(text):
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """Every relative link of ``page`` that does not land: a missing file, a path outside ``root`` (the
    repository), or an anchor that is no heading of the Markdown file it names."""
    problems = []
    page = page.resolve()
    for match in LINK.finditer(prose(page.read_text(encoding="utf-8"))):
        target = match.group(2)
        if SCHEME.match(target):
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        where = f"{page.relative_to(root)}: ({target})"
        if not resolved.is_relative_to(root):
            problems.append(f"{where} leaves the repository")
        elif not resolved.exists():
            problems.append(f"{where} names a missing file")
        elif anchor and (resolved.suffix != ".md" or anchor not in anchors(resolved)):
            problems.append(f"{where} names no heading of {resolved.relative_to(root)}")
    return problems


def metric_names(markdown: str) -> set[str]:
    """``token_service_*`` names a page mentions, outside link targets (anchors may spell setting names)."""
    return set(METRIC.findall(LINK.sub(lambda m: m.group(1), markdown)))


@pytest.fixture(scope="module")
def exported() -> Iterator[set[str]]:
    """Every series name two live scrapes show: the embedded default after a request, and an embedded managed
    ring with a rotation staged (the ring's retirement and next-stage gauges exist only there)."""
    names: set[str] = set()
    for settings in (Settings(log_level="ERROR"),
                     Settings(log_level="ERROR", admin_key=ADMIN_KEY, key_encryption_key=secrets.token_bytes(32))):
        client = create_app(settings).test_client()
        assert client.get("/healthz").status_code == 200
        if settings.key_encryption_key:
            staged = client.post("/v1/admin/signing-keys/rotate", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
            assert staged.status_code == 201
        for family in text_string_to_metric_families(client.get("/metrics").get_data(as_text=True)):
            names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
            names.update(sample.name for sample in family.samples)
    yield names


def test_the_pages_are_found() -> None:
    relative = {str(page.relative_to(ROOT)) for page in PAGES}
    assert {"README.md", "docs/README.md", "docs/browser.md", "docs/runbook.md", "docs/operations/README.md"} <= relative


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_lands(page: Path) -> None:
    assert broken_links(page) == []


def test_the_index_lists_every_page() -> None:
    index = DOCS / "README.md"
    linked = {(DOCS / match.group(2).partition("#")[0]).resolve()
              for match in LINK.finditer(prose(index.read_text(encoding="utf-8")))}
    missing = [str(page.relative_to(ROOT)) for page in DOCS.rglob("*.md") if page != index and page.resolve() not in linked]
    assert missing == []


@pytest.mark.parametrize("page", sorted(DOCS.rglob("*.md")), ids=lambda page: str(page.relative_to(ROOT)))
def test_every_metric_named_is_exported(page: Path, exported: set[str]) -> None:
    assert metric_names(page.read_text(encoding="utf-8")) - exported == set()


def test_the_scrape_has_the_metrics_the_docs_lean_on(exported: set[str]) -> None:
    for name in ("token_service_http_requests_total", "token_service_store_errors_total",
                 "token_service_store_call_duration_seconds_bucket", "token_service_signing_key_retirement_seconds"):
        assert name in exported


def test_the_checker_finds_what_is_broken(tmp_path: Path) -> None:
    """The helpers fail where they should (a checker that passes everything proves nothing)."""
    assert slug("Health: `/healthz` and `/readyz`") == "health-healthz-and-readyz"
    assert slug("Waiting for replicas (`TOKEN_SERVICE_REDIS_WAIT_REPLICAS`)") == "waiting-for-replicas-token_service_redis_wait_replicas"
    assert slug("Incident response (the guide's five steps)") == "incident-response-the-guides-five-steps"
    assert slug("9. Never a secret key in a browser") == "9-never-a-secret-key-in-a-browser"
    target = ROOT / "docs" / "runbook.md"
    assert "a-leaked-api-key" in anchors(target) and "the-api-key" not in anchors(target)
    repo = tmp_path / "repo"
    (repo / "docs").mkdir(parents=True)
    (repo / "docs" / "runbook.md").write_text("# Runbook\n\n## A leaked API key\n", encoding="utf-8")
    page = repo / "docs" / "probe.md"
    page.write_text(
        "[ok](runbook.md#a-leaked-api-key) [web](https://example.com/x) `[code](missing.md)` [self](#probe)\n"
        "```\n[fenced](missing.md)\n```\n# Probe\n"
        "[gone](missing.md) [bad anchor](runbook.md#no-such-heading) [out](../../elsewhere.md)\n"
        "token_service_http_requests_total token_service_no_such_metric\n",
        encoding="utf-8",
    )
    problems = broken_links(page, repo.resolve())
    assert len(problems) == 3, problems
    assert "(missing.md) names a missing file" in problems[0]
    assert "(runbook.md#no-such-heading) names no heading" in problems[1]
    assert "(../../elsewhere.md) leaves the repository" in problems[2]
    assert metric_names(page.read_text(encoding="utf-8")) == {"token_service_http_requests_total", "token_service_no_such_metric"}
