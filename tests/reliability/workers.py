"""The gunicorn workers of a test instance, read from /proc (Linux): which exist, and which have built the
app (they hold a connection to its Redis). A test that takes a store away first waits for every worker to
be up, so that a worker still booting, which cannot build the app without the store, is not mistaken for
one killed by the outage."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.e2e.servers import Instance


def workers(instance: Instance) -> set[int]:
    """The pids of the instance's workers (the children of its gunicorn master)."""
    assert instance.process is not None
    pid = instance.process.pid
    return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def _connected_to(port: int) -> set[str]:
    """Socket inodes of established IPv4 connections to 127.0.0.1:``port``."""
    wanted = f"0100007F:{port:04X}"
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[2] == wanted and fields[3] == "01":
            inodes.add(fields[9])
    return inodes


def _holds_one_of(pid: int, inodes: set[str]) -> bool:
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            return True
    return False


def wait_until_booted(instance: Instance, redis_port: int, count: int, seconds: float = 30) -> set[int]:
    """Wait until ``count`` workers exist and each holds a connection to the Redis on ``redis_port``; their pids."""
    deadline = time.monotonic() + seconds
    while True:
        pids = workers(instance)
        inodes = _connected_to(redis_port)
        if len(pids) == count and all(_holds_one_of(pid, inodes) for pid in pids):
            return pids
        assert time.monotonic() < deadline, f"the workers did not all boot within {seconds} s: {instance.output()}"
        time.sleep(0.1)
