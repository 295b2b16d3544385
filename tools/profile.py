"""Sampling profiles of the request paths (issue 7): ``make profile`` (or ``python -m tools.profile``); see
docs/performance.md, "Profiles (py-spy)".

It starts Redis and the service as ``tools.bench`` does (``tools/harness.py``: ``gunicorn -c
config/gunicorn.conf.py``, the same environment, the same keys made through the admin API) but with ONE sync
worker, so that one process does all the work and its profile is the whole request path. For each scenario wrk
(the Lua scripts of ``tools/wrk/``) keeps that worker saturated while ``py-spy record --pid <worker> --idle``
samples it; ``--idle`` keeps the samples where the worker waits (for Redis's answer, for the next connection),
so the shares are shares of the worker's wall time, that is of the time a request costs. Then, for half as long,
py-spy samples it without ``--idle``: the on-CPU shares (``<scenario>.cpu.txt``), what the cores are spent on when
several workers overlap their waits, and the share of its time the worker was on a CPU. The in-process
verifier (``token_service.verifier.Verifier``, one token repeated, each revocation source) is profiled in a
Python loop of its own (without ``--idle``: its source's background thread only waits).

For every scenario it writes, under ``run/profile-<UTC time>/``: ``<scenario>.txt`` (py-spy's ``--format raw``
collapsed stacks), ``<scenario>.svg`` (a flame graph drawn from them, coloured by category) and
``<scenario>.speedscope.json`` (for https://www.speedscope.app), then ``summary.json`` and ``summary.txt``: the
share of samples by category (each sample counted once, for the innermost frame that belongs to a category;
the shares add up to 100 %), inclusive shares (the samples under flask-limiter, the hooks, the view, ...), the
time per request they amount to (share / req/s of a run without the profiler of at most 5 s just before, which is
also the warm-up: the worker is saturated; fresh-token scenarios use tokens of their own for it), and the top 15
leaf functions.

``python -m tools.profile summarise FILE.txt...`` prints the same summary for collapsed stacks already recorded;
``python -m tools.profile markdown RUN_DIR [cpu]`` prints a run's table of shares in Markdown (docs/performance.md);
``python -m tools.profile resummarise RUN_DIR`` makes a run's summaries and drawings again from its stacks.

Settings (environment): PROFILE_SECONDS (20 per scenario), PROFILE_RATE (500 samples a second),
PROFILE_CONNECTIONS (8), PROFILE_TOKENS (distinct tokens for the fresh-token scenarios: 30000), PROFILE_SHORT=1
(2 s per scenario, 200 tokens: proves the command works), PROFILE_SCENARIOS (a comma-separated subset of
SCENARIOS), PROFILE_RUN_DIR. Exit status 0 when every scenario was profiled with only expected answers, 1
otherwise, 2 for a bad setting, 3 when py-spy is missing or cannot attach to a process (it needs ptrace:
root, CAP_SYS_PTRACE, or kernel.yama.ptrace_scope=0). No token or key is printed or left behind.
"""

from __future__ import annotations

import concurrent.futures
import html
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.bench import AUDIENCE, ISSUER, PERSONA, BenchError, Options, Service, claims_of, machine, mint_tokens, run_wrk
from tools.harness import ROOT, Instance, RedisProcess, stop_all

PROG = "profile"

# name -> (label, kind, wrk script, path, extra wrk environment); kind: "floor", "service" or "inproc"
SCENARIOS: dict[str, tuple[str, str, str, str, dict[str, str]]] = {
    "flask": ("bare Flask, one route (the floor)", "floor", "flask.lua", "/", {}),
    "mint": ("mint (secret key)", "service", "mint.lua", "/v1/tokens", {}),
    "verify_repeated": ("verify, one token repeated", "service", "verify.lua", "/v1/verify", {"BENCH_REPEAT": "1"}),
    "verify_fresh": ("verify, fresh tokens", "service", "verify.lua", "/v1/verify", {}),
    "introspect_repeated": ("introspect, one token repeated", "service", "introspect.lua", "/v1/introspect",
                            {"BENCH_REPEAT": "1"}),
    "introspect_fresh": ("introspect, fresh tokens", "service", "introspect.lua", "/v1/introspect", {}),
    "inproc_feed": ("in-process Verifier, repeated token, FeedRevocations", "inproc", "", "", {}),
    "inproc_redis": ("in-process Verifier, repeated token, RedisRevocations", "inproc", "", "", {}),
}
DEFAULT_SCENARIOS = ("flask", "mint", "verify_repeated", "verify_fresh", "introspect_repeated", "inproc_feed",
                     "inproc_redis")
EXIT_NO_PYSPY = 3

# --- categories -----------------------------------------------------------------------------------------------------
# A sample is counted once, for the innermost frame (leaf first) whose file matches a category; frames of modules
# in no category (socket.py, selectors.py, uuid.py, hmac.py, re, ...) count for the caller that is. Order matters
# only where prefixes overlap (flask/json/ before flask/, token_service/web/hooks.py before token_service/web/).

CATEGORIES: list[tuple[str, str, tuple[str, ...]]] = [
    ("redis", "redis-py + hiredis (send, wait for the answer, parse)", ("redis/", "hiredis/")),
    ("crypto", "PyJWT + cryptography (JWT parsing, signature)", ("jwt/", "cryptography/")),
    ("limiter", "flask-limiter + limits (+ web/rate_limits.py)", ("flask_limiter/", "limits/",
                                                                  "token_service/web/rate_limits.py")),
    ("json", "JSON (json, flask.json)", ("json/", "flask/json/")),
    ("logging", "logging (the access-log line)", ("logging/", "gunicorn/glogging.py", "token_service/logs.py")),
    ("metrics", "metrics (prometheus_client, web/metrics.py)", ("prometheus_client/", "token_service/web/metrics.py")),
    ("werkzeug", "Werkzeug (request, response, headers, routing)", ("werkzeug/",)),
    ("flask", "Flask dispatch (app, contexts, hook runner)", ("flask/",)),
    ("hooks", "our hooks (token_service/web/hooks.py)", ("token_service/web/hooks.py",)),
    ("views", "our views (token_service/web/*)", ("token_service/web/",)),
    ("tokens", "our token code (tokens.py, claims.py, keys.py)", ("token_service/tokens.py", "token_service/claims.py",
                                                                  "token_service/keys.py")),
    ("verifier", "our in-process verifier (token_service/verifier/)", ("token_service/verifier/",)),
    ("service", "our service core (service.py, auth/, stores/, revocation.py, ...)", ("token_service/",)),
    ("gunicorn", "gunicorn sync worker (accept, read, parse, write, loop)", ("gunicorn/",)),
    ("bench", "the profiling loop itself (tools/)", ("tools/",)),
]
OTHER = ("other", "other (no frame in a category)")
LABELS = {key: label for key, label, _ in CATEGORIES} | {OTHER[0]: OTHER[1]}

# Inclusive shares: samples with at least one frame matching (function or None, file prefix); a function matches
# its bare name or a qualified name ending in it (py-spy writes "Flask.wsgi_app").
INCLUSIVE: list[tuple[str, str, tuple[tuple[str | None, str], ...]]] = [
    ("app", "inside the Flask app (Flask.wsgi_app and below)", (("wsgi_app", "flask/app.py"),)),
    ("limiter_all", "under flask-limiter, outside the view it wraps (+ its Redis calls)",
     ((None, "flask_limiter/"), (None, "limits/"), (None, "token_service/web/rate_limits.py"))),
    ("hooks_all", "under our hooks (access log included)", ((None, "token_service/web/hooks.py"),)),
    ("view_all", "under the view function (verify / introspect / mint)", (("verify", "token_service/web/public.py"),
                                                                           ("introspect", "token_service/web/public.py"),
                                                                           ("mint", "token_service/web/public.py"))),
    ("redis_all", "in redis-py (every caller)", ((None, "redis/"), (None, "hiredis/"))),
    ("redis_send", "  redis-py sending a command (sendall)", (("send_packed_command", "redis/"),)),
    ("redis_read", "  redis-py waiting for and parsing an answer", (("read_response", "redis/"),)),
    ("crypto_all", "in PyJWT + cryptography (its JSON included)", ((None, "jwt/"), (None, "cryptography/"))),
    ("gunicorn_write", "gunicorn writing the response (sendall)", (("write", "gunicorn/util.py"),)),
    ("gunicorn_close", "gunicorn's graceful close (waits for the client's FIN)", (("close_graceful", "gunicorn/util.py"),)),
]

FRAME_RE = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


@dataclass(frozen=True)
class Frame:
    func: str
    file: str
    line: int | None

    @property
    def name(self) -> str:
        return f"{self.func} ({self.file})"


def parse_frame(text: str) -> Frame:
    match = FRAME_RE.match(text)
    if match is None:
        return Frame(text, "", None)
    line = match.group("line")
    return Frame(match.group("func"), match.group("file"), int(line) if line else None)


def read_collapsed(lines: Iterable[str]) -> list[tuple[list[Frame], int]]:
    """py-spy's raw format: ``root;...;leaf count`` per line (frames ``function (file:line)``), root first."""
    stacks = []
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            continue
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        stacks.append(([parse_frame(f) for f in stack.split(";")], int(count)))
    return stacks


def category_of_file(file: str) -> str | None:
    for key, _label, prefixes in CATEGORIES:
        if file.startswith(prefixes):
            return key
    return None


def category_of(stack: Sequence[Frame]) -> str:
    for frame in reversed(stack):
        key = category_of_file(frame.file)
        if key is not None:
            return key
    return OTHER[0]


def _matches(frame: Frame, matchers: Sequence[tuple[str | None, str]]) -> bool:
    return any(frame.file.startswith(prefix) and (func is None or frame.func == func or frame.func.endswith("." + func))
               for func, prefix in matchers)


def summarise(stacks: Sequence[tuple[list[Frame], int]], top: int = 15) -> dict[str, Any]:
    """Shares of samples by category (adding up to 100), inclusive shares and the top leaf functions."""
    total = sum(count for _, count in stacks)
    by_category: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    leaf_lines: Counter[tuple[str, int | None]] = Counter()
    inclusive: Counter[str] = Counter()
    for stack, count in stacks:
        by_category[category_of(stack)] += count
        if stack:
            leaves[stack[-1].name] += count
            leaf_lines[(stack[-1].name, stack[-1].line)] += count
        depth = {key: max((i for i, frame in enumerate(stack) if _matches(frame, matchers)), default=-1)
                 for key, _label, matchers in INCLUSIVE}
        for key, _label, _matchers in INCLUSIVE:
            # flask-limiter's decorator wraps the view: a sample counts for it only below its deepest limiter frame
            if depth[key] >= 0 and not (key == "limiter_all" and depth["view_all"] > depth[key]):
                inclusive[key] += count

    def pct(n: int) -> float:
        return round(100.0 * n / total, 2) if total else 0.0

    order = [key for key, _, _ in CATEGORIES] + [OTHER[0]]
    return {
        "samples": total,
        "categories": {key: pct(by_category[key]) for key in order},
        "inclusive": {key: pct(inclusive[key]) for key, _, _ in INCLUSIVE},
        "top_leaves": [{"function": name, "percent": pct(n), "category": category_of_file(name.rsplit("(", 1)[-1][:-1]) or "-",
                        "main_line": max(((line, c) for (leaf, line), c in leaf_lines.items() if leaf == name),
                                         key=lambda lc: lc[1])[0]}
                       for name, n in leaves.most_common(top)],
    }


def format_summary(name: str, label: str, summary: dict[str, Any], per_request_us: float | None = None) -> str:
    out = [f"== {name}: {label} ({summary['samples']} samples)"]
    if per_request_us:
        out.append(f"   {per_request_us:,.0f} µs of the worker's time per request (1 / req/s without the profiler)")
    out.append(f"   {'category':<70} {'share':>7}" + (f" {'µs/req':>8}" if per_request_us else ""))
    for key, share in summary["categories"].items():
        if share:
            extra = f" {share * per_request_us / 100:>8.0f}" if per_request_us else ""
            out.append(f"   {LABELS[key]:<70} {share:>6.1f}%{extra}")
    out.append(f"   {'total':<70} {sum(summary['categories'].values()):>6.1f}%")
    out.append("   inclusive (a sample counts in every row whose frames it has):")
    for key, label, _ in INCLUSIVE:
        share = summary["inclusive"][key]
        if share:
            extra = f" {share * per_request_us / 100:>8.0f}" if per_request_us else ""
            out.append(f"   {label:<70} {share:>6.1f}%{extra}")
    cpu = summary.get("cpu")
    if cpu:
        out.append(f"   on CPU (py-spy without --idle, {cpu['samples']} samples; the worker was on a CPU or waiting for one "
                   f"{cpu['on_cpu_percent']}% of the time):")
        for key, share in cpu["categories"].items():
            if share:
                out.append(f"   {LABELS[key]:<70} {share:>6.1f}%")
        out.append(f"   {'total':<70} {sum(cpu['categories'].values()):>6.1f}%")
    out.append("   top leaf functions:")
    for leaf in summary["top_leaves"]:
        line = f", mostly line {leaf['main_line']}" if leaf.get("main_line") else ""
        out.append(f"   {leaf['percent']:>6.1f}%  {leaf['function']}  [{leaf['category']}{line}]")
    return "\n".join(out)


def comparison_table(results: dict[str, Any]) -> str:
    """Categories as rows, scenarios as columns: share % (and µs per request for the HTTP scenarios)."""
    names = [n for n in results if results[n].get("summary")]
    if not names:
        return ""
    head = f"{'share of samples %':<52}" + "".join(f" {n[:19]:>19}" for n in names)
    out = [head]
    rows = [(key, LABELS[key], "categories") for key in [k for k, _, _ in CATEGORIES] + [OTHER[0]]]
    rows += [(key, label, "inclusive") for key, label, _ in INCLUSIVE]
    for key, label, part in rows:
        values = [results[n]["summary"][part][key] for n in names]
        if not any(values):
            continue
        cells = []
        for n, v in zip(names, values, strict=True):
            us = results[n].get("us_per_request")
            cells.append(f"{v:5.1f}" + (f" ({v * us / 100:5.0f} µs)" if us else " " * 11))
        out.append(f"{(label if part == 'categories' else '  ' + label)[:52]:<52}" + "".join(f" {c:>19}" for c in cells))
    for key, title in (("rps", "req/s (1 worker) / loop calls/s, profiled"), ("unprofiled", "the same without the profiler")):
        values = [results[n].get(key) for n in names]
        out.append(f"{title:<52}" + "".join(f" {(f'{r:,.0f}' if r else '-'):>19}" for r in values))
    return "\n".join(out)


def markdown_table(results: dict[str, Any], part_name: str = "summary") -> str:
    """``summary.json``'s scenarios as a Markdown table (docs/performance.md): share % and µs per request.
    ``part_name="cpu_summary"``: the on-CPU recordings (shares only)."""
    cpu = part_name == "cpu_summary"
    names = [n for n in results if results[n].get(part_name)]
    out = ["| share of the worker's samples | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    rows = [(key, LABELS[key], "categories") for key in [k for k, _, _ in CATEGORIES] + [OTHER[0]]]
    rows += [(key, label, "inclusive") for key, label, _ in INCLUSIVE]
    for key, label, part in rows:
        values = [results[n][part_name][part][key] for n in names]
        if not any(values):
            continue
        cells = []
        for n, v in zip(names, values, strict=True):
            us = None if cpu else results[n].get("us_per_request")
            cells.append("–" if not v else f"{v:.1f} %" + (f" ({v * us / 100:,.0f} µs)" if us else ""))
        title = label if part == "categories" else f"*{label.strip()}*"
        out.append(f"| {title} | " + " | ".join(cells) + " |")
    out.append("| **total** (categories) | " + " | ".join(f"{sum(results[n][part_name]['categories'].values()):.1f} %"
                                                         for n in names) + " |")
    if cpu:
        out.append("| on a CPU (or waiting for one), % of the worker's time | "
                   + " | ".join(f"{results[n].get('on_cpu_percent') or 0:.0f} %" for n in names) + " |")
        return "\n".join(out)

    def rate(n: str, *keys: str) -> str:
        value = next((results[n][k] for k in keys if results[n].get(k)), None)
        return f"{value:,.0f}" if value else "-"

    out.append("| req/s (1 worker) or calls/s, profiled | " + " | ".join(rate(n, "rps", "calls_per_s") for n in names) + " |")
    out.append("| the same without the profiler | " + " | ".join(rate(n, "rps_unprofiled", "calls_per_s_unprofiled") for n in names) + " |")
    return "\n".join(out)


# --- drawing: a flame graph (SVG) and a speedscope document from collapsed stacks ----------------------------------------

COLOURS = {
    "redis": "#e0533d", "crypto": "#9b59b6", "limiter": "#e67e22", "json": "#f1c40f", "logging": "#95a5a6",
    "metrics": "#d35400",
    "werkzeug": "#3498db", "flask": "#5dade2", "hooks": "#27ae60", "views": "#2ecc71", "tokens": "#16a085",
    "verifier": "#1abc9c", "service": "#58d68d", "gunicorn": "#7f8c8d", "bench": "#bdc3c7", "other": "#d5d8dc",
}


def flamegraph_svg(stacks: Sequence[tuple[list[Frame], int]], title: str, width: int = 1200,
                   min_fraction: float = 0.002) -> str:
    """A flame graph (root at the bottom), frames merged by function and file, coloured by their category; frames
    narrower than ``min_fraction`` of the samples are left out (the file stays small). Hover shows the share."""
    tree: dict[str, Any] = {"n": 0, "c": {}}
    for stack, count in stacks:
        node = tree
        node["n"] += 1 * count
        for frame in stack:
            node = node["c"].setdefault(frame.name, {"n": 0, "c": {}, "f": frame})
            node["n"] += count
    total = tree["n"] or 1
    row, pad = 16, 24
    rects: list[str] = []
    depth_max = 0

    def draw(node: dict[str, Any], x: float, depth: int) -> None:
        nonlocal depth_max
        for name, child in sorted(node["c"].items()):
            w = child["n"] / total * width
            if child["n"] / total >= min_fraction:
                depth_max = max(depth_max, depth)
                frame: Frame = child["f"]
                colour = COLOURS.get(category_of_file(frame.file) or "other", COLOURS["other"])
                tip = html.escape(f"{name}: {child['n']} samples, {100 * child['n'] / total:.2f} %")
                text = html.escape(frame.func[: max(0, int(w / 7))]) if w > 21 else ""  # cut, then escape
                rects.append(f'<g><title>{tip}</title><rect x="{x:.1f}" y="{{Y{depth}}}" width="{w:.1f}" height="{row - 1}" '
                             f'fill="{colour}" rx="2"/>' + (f'<text x="{x + 3:.1f}" y="{{T{depth}}}">{text}</text>' if text else "")
                             + "</g>")
                draw(child, x, depth + 1)
            x += w

    draw(tree, 0.0, 0)
    height = (depth_max + 1) * row + pad + 40
    body = "\n".join(rects)
    for depth in range(depth_max + 1):
        y = height - 40 - (depth + 1) * row
        body = body.replace(f"{{Y{depth}}}", str(y)).replace(f"{{T{depth}}}", str(y + row - 4))
    legend = "".join(f'<rect x="{8 + i * 74}" y="{height - 30}" width="10" height="10" fill="{COLOURS[key]}"/>'
                     f'<text x="{22 + i * 74}" y="{height - 21}">{key}</text>' for i, key in enumerate(COLOURS))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="monospace" '
            f'font-size="11"><rect width="100%" height="100%" fill="white"/>'
            f'<text x="8" y="16" font-size="13">{html.escape(title)} ({total} samples; hover for shares; frames under '
            f'{min_fraction:.1%} left out)</text>\n{body}\n{legend}</svg>\n')


def speedscope_json(stacks: Sequence[tuple[list[Frame], int]], name: str) -> dict[str, Any]:
    frames: dict[Frame, int] = {}
    samples, weights = [], []
    for stack, count in stacks:
        samples.append([frames.setdefault(f, len(frames)) for f in stack])
        weights.append(count)
    return {
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "shared": {"frames": [{"name": f.func, "file": f.file, **({"line": f.line} if f.line else {})} for f in frames]},
        "profiles": [{"type": "sampled", "name": name, "unit": "none", "startValue": 0, "endValue": sum(weights),
                      "samples": samples, "weights": weights}],
        "name": name, "exporter": "tools/profile.py",
    }


# --- py-spy ---------------------------------------------------------------------------------------------------------------

def py_spy() -> str | None:
    """py-spy next to this interpreter (the venv's, from requirements-dev.txt), else on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def can_attach(binary: str) -> str | None:
    """None when py-spy can read a live Python process of ours; else why not (ptrace refused, ...)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.3)
        done = subprocess.run([binary, "dump", "--pid", str(child.pid)], capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            return (done.stderr or done.stdout).strip().splitlines()[-1] if (done.stderr or done.stdout).strip() else "failed"
        return None
    finally:
        child.kill()
        child.wait()


def record(binary: str, pid: int, out: Path, seconds: int, rate: int, idle: bool) -> dict[str, Any]:
    args = [binary, "record", "--pid", str(pid), "--rate", str(rate), "--duration", str(seconds), "--format", "raw",
            "--output", str(out)] + (["--idle"] if idle else [])
    done = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0 or not out.exists():
        raise BenchError(f"py-spy record failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()[-300:]}")
    return {"command": " ".join(["py-spy", *args[1:3], "<pid>", *args[4:9], out.name, *args[10:]]),
            "py_spy_output": done.stderr.strip()[-300:]}


# --- the run --------------------------------------------------------------------------------------------------------------

@dataclass
class Settings:
    seconds: int
    rate: int
    connections: int
    tokens: int
    short: bool
    scenarios: list[str]
    run_dir: Path


def settings() -> Settings:
    env = os.environ
    short = env.get("PROFILE_SHORT", "") == "1"

    def number(name: str, default: int, low: int) -> int:
        raw = env.get(name, "").strip()
        if not raw:
            return default
        if not raw.isdigit() or int(raw) < low:
            raise SystemExit(_usage(f"{name} must be a whole number of at least {low}, not {raw!r}"))
        return int(raw)

    names = [n.strip() for n in env.get("PROFILE_SCENARIOS", "").split(",") if n.strip()]
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        raise SystemExit(_usage(f"PROFILE_SCENARIOS: unknown {', '.join(unknown)} (known: {', '.join(SCENARIOS)})"))
    stamp = time.strftime("profile-%Y%m%dT%H%M%SZ", time.gmtime())
    return Settings(seconds=number("PROFILE_SECONDS", 2 if short else 20, 1), rate=number("PROFILE_RATE", 500, 1),
                    connections=number("PROFILE_CONNECTIONS", 8, 1), tokens=number("PROFILE_TOKENS", 200 if short else 30_000, 1),
                    short=short, scenarios=[n for n in SCENARIOS if n in (names or DEFAULT_SCENARIOS)],
                    run_dir=Path(env.get("PROFILE_RUN_DIR") or ROOT / "run" / stamp))


def _usage(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return 2


class Profiler:
    def __init__(self, s: Settings, binary: str):
        self.s = s
        self.binary = binary
        self.results: dict[str, dict[str, Any]] = {}
        self.problems: list[str] = []
        self.unprofiled_tokens: Path | None = None
        # tools.bench's options, for its Service and run_wrk: one worker, one wrk thread (the other core is for Redis,
        # wrk and py-spy), no extra gunicorn flags
        self.opts = Options(seconds=s.seconds, connections=s.connections, workers=1, short=s.short, revocations=0,
                            tokens=s.tokens, alg="ES256", gunicorn_args=[], scenarios=set(), run_dir=s.run_dir, warmup=0,
                            inproc_seconds=0.0, wrk_threads=1)

    def say(self, text: str) -> None:
        print(f"{PROG}: {text}", flush=True)

    def finish(self, name: str, raw: Path, extra: dict[str, Any], thread_of: str | None = None,
               cpu_raw: Path | None = None) -> None:
        """Summarise and draw ``raw``. ``thread_of``: keep only the samples of the thread running that function (the
        in-process loop; its revocation source's background thread, waiting, is left out and its share recorded).
        ``cpu_raw``: the on-CPU recording of the same worker (summarised too; its sample count against the wall
        recording's, per second, is the share of the worker's time on a CPU or waiting for one)."""
        if cpu_raw is not None:
            cpu_stacks = read_collapsed(cpu_raw.read_text().splitlines())
            extra["cpu_summary"] = summarise(cpu_stacks)
            wall_per_s = sum(n for _, n in read_collapsed(raw.read_text().splitlines())) / self.s.seconds
            cpu_per_s = extra["cpu_summary"]["samples"] / extra["cpu_seconds"]
            extra["on_cpu_percent"] = round(100 * cpu_per_s / wall_per_s, 1) if wall_per_s else None
        label = SCENARIOS[name][0]
        stacks = read_collapsed(raw.read_text().splitlines())
        if thread_of is not None:
            kept = [(stack, n) for stack, n in stacks if any(f.func == thread_of for f in stack)]
            total = sum(n for _, n in stacks)
            extra["other_threads_percent"] = round(100 * (1 - sum(n for _, n in kept) / total), 2) if total else 0.0
            stacks = kept
        summary = summarise(stacks)
        rps = extra.get("rps")
        # µs per request from the rate without the profiler (py-spy pauses the worker for each sample, a cost spread
        # over every category alike), else from the profiled rate
        base = extra.get("rps_unprofiled") or rps
        result = {"label": label, **extra, "summary": summary, "raw": raw.name,
                  "us_per_request": round(1e6 / base, 1) if base and SCENARIOS[name][1] != "inproc" else None}
        (self.s.run_dir / f"{name}.svg").write_text(flamegraph_svg(stacks, f"{name}: {label}"))
        (self.s.run_dir / f"{name}.speedscope.json").write_text(json.dumps(speedscope_json(stacks, name)))
        self.results[name] = result
        self.say(f"{label}: {summary['samples']} samples" + (f", {rps:,.0f} req/s while profiled" if rps else ""))

    def http(self, name: str, instance: Instance, env: dict[str, str]) -> None:
        """wrk keeps the one worker busy; py-spy samples it from the first second on: ``seconds`` with --idle, then half
        as long without (a margin of 3 s at the end for py-spy's start-up on a loaded machine)."""
        if name not in self.s.scenarios:
            return
        label, _kind, script, path, extra = SCENARIOS[name]
        pid = instance.workers()[0]
        raw = self.s.run_dir / f"{name}.txt"
        # the rate without the profiler (and a warm-up); fresh tokens from a part of their own, so that the profiled
        # run's tokens are still new to the worker's verify cache
        pre_env = {**env, **extra}
        if name.endswith("_fresh") and self.unprofiled_tokens is not None:
            pre_env["BENCH_TOKENS_FILE"] = str(self.unprofiled_tokens)
        try:
            unprofiled = run_wrk(self.opts, instance.port, script, path, min(5, self.s.seconds), pre_env,
                                 self.s.run_dir / "wrk.txt")["rps"]
        except BenchError as exc:
            self.problems.append(f"{name}: {exc}")
            return
        cpu_raw, cpu_seconds = self.s.run_dir / f"{name}.cpu.txt", max(1, self.s.seconds // 2)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            load = pool.submit(run_wrk, self.opts, instance.port, script, path, self.s.seconds + cpu_seconds + 4,
                               {**env, **extra}, self.s.run_dir / "wrk.txt")
            time.sleep(1)
            try:
                spy = record(self.binary, pid, raw, self.s.seconds, self.s.rate, idle=True)
                # then the on-CPU samples alone (py-spy leaves out a thread that the kernel has asleep: in recv, select)
                record(self.binary, pid, cpu_raw, cpu_seconds, self.s.rate, idle=False)
                spy["cpu_seconds"] = cpu_seconds
            except BenchError as exc:
                self.problems.append(f"{name}: {exc}")
                load.result()
                return
            try:
                wrk = load.result()
            except BenchError as exc:
                self.problems.append(f"{name}: {exc}")
                return
        if wrk["unexpected"] or wrk["socket_errors"]:
            self.problems.append(f"{name}: {wrk['unexpected']} unexpected answers, {wrk['socket_errors']} socket errors")
        self.finish(name, raw, {"rps": wrk["rps"], "rps_unprofiled": unprofiled, "requests": wrk["requests"],
                                "p99_ms": wrk["p99_ms"], **spy}, cpu_raw=cpu_raw)

    def inproc(self, name: str, port: int, redis_url: str, key_file: Path, token_file: Path) -> None:
        if name not in self.s.scenarios:
            return
        source = name.removeprefix("inproc_")
        raw = self.s.run_dir / f"{name}.txt"
        result_file = token_file.parent / f"{name}.json"
        env = {**os.environ, "PROFILE_LOOP_SERVICE": f"http://127.0.0.1:{port}", "PROFILE_LOOP_REDIS": redis_url,
               "PROFILE_LOOP_KEY_FILE": str(key_file), "PROFILE_LOOP_TOKEN_FILE": str(token_file),
               "PROFILE_LOOP_OUT": str(result_file)}
        try:  # first without the profiler, for the rate alone
            subprocess.run([sys.executable, "-m", "tools.profile", "verifier-loop", source, str(min(5, self.s.seconds))],
                           cwd=ROOT, env=env, check=True, timeout=60)
            unprofiled = json.loads(result_file.read_text())["per_s"]
        except (subprocess.SubprocessError, OSError, ValueError) as exc:
            self.problems.append(f"{name}: the verifier loop failed ({type(exc).__name__})")
            return
        result_file.with_suffix(".started").unlink()
        loop = subprocess.Popen([sys.executable, "-m", "tools.profile", "verifier-loop", source, str(self.s.seconds + 4)],
                                cwd=ROOT, env=env)
        try:
            deadline = time.monotonic() + 20
            while not result_file.with_suffix(".started").exists():  # the loop is running (sources current)
                if loop.poll() is not None or time.monotonic() > deadline:
                    raise BenchError(f"the verifier loop did not start (exit {loop.poll()})")
                time.sleep(0.05)
            time.sleep(0.5)
            spy = record(self.binary, loop.pid, raw, self.s.seconds, self.s.rate, idle=False)
            if loop.wait(timeout=self.s.seconds + 30) != 0:
                raise BenchError(f"the verifier loop failed (exit {loop.returncode})")
        except BenchError as exc:
            self.problems.append(f"{name}: {exc}")
            return
        finally:
            if loop.poll() is None:
                loop.kill()
                loop.wait()
        loop_result = json.loads(result_file.read_text())
        self.finish(name, raw, {"calls_per_s": loop_result["per_s"], "calls_per_s_unprofiled": unprofiled, **spy},
                    thread_of="verifier_loop")


def sign_like(token: str, service: Service, count: int) -> list[str]:
    """``count`` more tokens for the fresh-token scenarios, signed here with the service's key: the claims of ``token``
    (minted by the service) with a new ``jti`` and ``sub`` each, signed by the service's own TokenCodec. Much faster
    than minting them through one worker, and the same to the verify path (it keeps no record of minted tokens)."""
    import dataclasses
    import uuid

    from token_service.claims import AccessClaims
    from token_service.tokens import TokenCodec

    claims = AccessClaims.from_dict(claims_of(token))
    if claims is None:
        raise BenchError("the minted token's claims do not parse")
    codec = TokenCodec(ISSUER, AUDIENCE, 30)
    return [codec.encode(dataclasses.replace(claims, jti=str(uuid.uuid4()), sub=f"user-signed-{i}"), service.signing_key)
            for i in range(count)]


def verifier_loop(source: str, seconds: float) -> int:
    """The in-process verifier on one token, repeated, for ``seconds`` (the process py-spy samples)."""
    from token_service.verifier import FeedRevocations, Verifier
    from token_service.verifier.redis_source import RedisRevocations

    env = os.environ
    service, out = env["PROFILE_LOOP_SERVICE"], Path(env["PROFILE_LOOP_OUT"])
    token = Path(env["PROFILE_LOOP_TOKEN_FILE"]).read_text().split("\n", 1)[0].strip()
    revocations: Any
    if source == "feed":
        revocations = FeedRevocations(service, Path(env["PROFILE_LOOP_KEY_FILE"]).read_text().strip(), poll_interval=5,
                                      staleness_bound=30)
        deadline = time.monotonic() + 10
        while revocations.age() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    else:
        revocations = RedisRevocations(env["PROFILE_LOOP_REDIS"])
        revocations.wait_current(10)
    verifier = Verifier(issuer=ISSUER, audience=AUDIENCE, jwks_url=f"{service}/.well-known/jwks.json", revocations=revocations)
    try:
        verifier.verify(token, persona_id=PERSONA)
        out.with_suffix(".started").touch()
        calls, start = 0, time.perf_counter()
        verify: Callable[..., Any] = verifier.verify
        while True:
            for _ in range(100):
                verify(token, persona_id=PERSONA)
            calls += 100
            if time.perf_counter() - start >= seconds:
                break
        out.write_text(json.dumps({"per_s": round(calls / (time.perf_counter() - start), 1), "calls": calls}))
    finally:
        revocations.close()
    return 0


def run() -> int:
    s = settings()
    binary = py_spy()
    if binary is None:
        print(f"{PROG}: py-spy is not installed (pip install -r requirements-dev.txt)", file=sys.stderr)
        return EXIT_NO_PYSPY
    refused = can_attach(binary)
    if refused is not None:
        print(f"{PROG}: py-spy cannot attach to a process here ({refused}); it needs ptrace: run as root, with "
              f"CAP_SYS_PTRACE, or with kernel.yama.ptrace_scope=0", file=sys.stderr)
        return EXIT_NO_PYSPY
    if shutil.which("wrk") is None:
        print(f"{PROG}: wrk is not on PATH (Debian/Ubuntu: apt-get install wrk)", file=sys.stderr)
        return 2
    s.run_dir.mkdir(parents=True, exist_ok=True)
    info = machine()
    prof = Profiler(s, binary)
    prof.say(f"{info['cores']} cores ({info['cpu']}), load {info['load_average_at_start']}; gunicorn 1 sync worker, wrk 1 "
             f"thread x {s.connections} connections; py-spy {s.rate}/s for {s.seconds} s per scenario -> {s.run_dir}")
    started = time.monotonic()
    store = RedisProcess(s.run_dir / "redis", prog=PROG)
    instances: list[Instance] = []
    tokens_info: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="profile-") as private:
        secrets_dir = Path(private)  # mode 0700: tokens, keys
        try:
            store.start()
            service = Service(prof.opts, store.url, secrets_dir, s.run_dir)
            if "flask" in s.scenarios:
                floor = service.start("tools.bench_flask:app", name="flask", ready_path="/")
                instances.append(floor)
                prof.http("flask", floor, {})
                floor.stop()
            if any(SCENARIOS[n][1] != "floor" for n in s.scenarios):
                inst = service.start()
                instances.append(inst)
                service.create_keys(inst.port)
                prof.http("mint", inst, {"BENCH_KEY_FILE": str(service.key_files["mint"]),
                                         "BENCH_TOKENS_OUT": str(secrets_dir / "minted")})
                tokens = [line for p in sorted(secrets_dir.glob("minted.*")) for line in p.read_text().splitlines() if line]
                captured = len(tokens)
                if not tokens:
                    tokens = mint_tokens(inst.port, service.key("mint"), 1, threads=1)
                random.shuffle(tokens)
                tokens = tokens[:1] + sign_like(tokens[0], service, max(0, s.tokens - len(tokens))) + tokens[1:]
                tokens_info = {"distinct": len(tokens), "from_mint_scenario": captured,
                               "signed_here": len(tokens) - max(captured, 1)}
                # the last quarter is for the fresh scenarios' unprofiled runs: every token the profiled run sends is new
                # to the worker's verify cache
                split = len(tokens) - len(tokens) // 4
                tokens_file, pre_file = secrets_dir / "tokens", secrets_dir / "tokens-unprofiled"
                for path, part in ((tokens_file, tokens[:split]), (pre_file, tokens[split:] or tokens[:1])):
                    path.write_text("\n".join(part) + "\n")
                    path.chmod(0o600)
                prof.unprofiled_tokens = pre_file
                tokens_info["for_profiled_runs"] = split
                verify_env = {"BENCH_TOKENS_FILE": str(tokens_file)}
                introspect_env = {**verify_env, "BENCH_KEY_FILE": str(service.key_files["introspect"])}
                for name in ("verify_repeated", "verify_fresh", "introspect_repeated", "introspect_fresh"):
                    prof.http(name, inst, introspect_env if name.startswith("introspect") else verify_env)
                for name in ("inproc_feed", "inproc_redis"):
                    prof.inproc(name, inst.port, store.url, service.key_files["introspect"], tokens_file)
        except BenchError as exc:
            prof.problems.append(str(exc))
            prof.say(f"stopped: {exc}")
        finally:
            stop_all(instances, store)
    for inst in instances:
        prof.problems += [f"{inst.name} log: {line}" for line in inst.log_problems()[:5]]
    info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    for name in ("verify_fresh", "introspect_fresh"):
        if name in prof.results and tokens_info:
            # a token seen before by the one worker is a verify-cache hit (no signature check)
            requests = prof.results[name]["requests"]
            prof.results[name]["verify_cache_hits_at_most"] = max(0, requests - tokens_info["for_profiled_runs"])
    results = {
        "machine": info,
        "settings": {"seconds": s.seconds, "rate": s.rate, "connections": s.connections, "wrk_threads": 1, "workers": 1,
                     "worker_class": "sync (config/gunicorn.conf.py)", "short": s.short, "alg": "ES256",
                     "py_spy": "gunicorn worker: --idle (wall time), then without --idle for half as long (on CPU); "
                               "in-process loops: without --idle, the loop's thread only"},
        "tokens": tokens_info, "scenarios": prof.results, "problems": prof.problems,
        "seconds": round(time.monotonic() - started, 1),
    }
    text = write_report(s.run_dir, results)
    print(text, flush=True)
    print(f"{PROG}: results in {s.run_dir}")
    return 1 if prof.problems else 0


def write_report(run_dir: Path, results: dict[str, Any]) -> str:
    """``summary.json`` and ``summary.txt`` of a run; the text."""
    (run_dir / "summary.json").write_text(json.dumps(results, indent=2) + "\n")
    scenarios, problems = results["scenarios"], results["problems"]
    text = "\n\n".join(format_summary(n, r["label"], {**r["summary"], "cpu": r.get("cpu_summary") and
                                                       {**r["cpu_summary"], "on_cpu_percent": r.get("on_cpu_percent")}},
                                       r.get("us_per_request")) for n, r in scenarios.items())
    text += "\n\n" + comparison_table({n: {**r, "rps": r.get("rps") or r.get("calls_per_s"),
                                           "unprofiled": r.get("rps_unprofiled") or r.get("calls_per_s_unprofiled")}
                                        for n, r in scenarios.items()})
    for problem in problems:
        text += f"\nPROBLEM: {problem}"
    text += f"\nresult: {'FAIL' if problems else 'ok'} ({results['seconds']:.0f} s)\n"
    (run_dir / "summary.txt").write_text(text)
    return text


def resummarise(run_dir: Path) -> str:
    """Summaries and drawings of a run made again from its collapsed stacks (after a change of the categories)."""
    results = json.loads((run_dir / "summary.json").read_text())
    s = Settings(seconds=results["settings"]["seconds"], rate=results["settings"]["rate"], connections=0, tokens=0,
                 short=False, scenarios=[], run_dir=run_dir)
    prof = Profiler(s, "")
    derived = {"label", "summary", "cpu_summary", "raw", "us_per_request", "on_cpu_percent", "other_threads_percent"}
    for name, old in results["scenarios"].items():
        extra = {k: v for k, v in old.items() if k not in derived}
        cpu_raw = run_dir / f"{name}.cpu.txt"
        prof.finish(name, run_dir / f"{name}.txt", extra, thread_of="verifier_loop" if name.startswith("inproc_") else None,
                    cpu_raw=cpu_raw if cpu_raw.exists() else None)
        prof.results[name] |= {k: v for k, v in old.items() if k.startswith("verify_cache")}
    results["scenarios"] = prof.results
    return write_report(run_dir, results)


def main(argv: Sequence[str]) -> int:
    if argv[:1] == ["verifier-loop"] and len(argv) == 3:
        return verifier_loop(argv[1], float(argv[2]))
    if argv[:1] == ["summarise"]:
        for path in map(Path, argv[1:]):
            summary = summarise(read_collapsed(path.read_text().splitlines()))
            print(format_summary(path.stem, str(path), summary) + "\n")
        return 0
    if argv[:1] == ["resummarise"] and len(argv) == 2:
        print(resummarise(Path(argv[1])))
        return 0
    if argv[:1] == ["markdown"] and len(argv) in (2, 3):
        scenarios = json.loads((Path(argv[1]) / "summary.json").read_text())["scenarios"]
        print(markdown_table(scenarios, "cpu_summary" if argv[2:] == ["cpu"] else "summary"))
        return 0
    if argv:
        return _usage("usage: python -m tools.profile [summarise FILE.txt... | markdown RUN_DIR [cpu] | resummarise RUN_DIR]")
    return run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
