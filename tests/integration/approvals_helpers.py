"""What the approval tests of both protocols share: a hold rule, the `dbguard approvals`
CLI run against a proxy's configuration (as a DBA in another terminal would), the queue read
back through it, and a client call running in a thread while its statement is held."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from tests.integration.harness import REPO_ROOT, ProxyProcess

RULES = """\
rules:
  - id: hold-agent-deletes
    description: an agent's deletes wait for a DBA
    when: {identity_kind: agent, statement: [delete]}
    action: hold
    approvers: [dba]
"""


def approvals_cli(proxy: ProxyProcess, *args: str, secret: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "250"}
    if secret is not None:
        env["DBGUARD_SECRET"] = secret
    return subprocess.run([sys.executable, "-m", "dbguard", "approvals", *args, "-c", str(proxy.config_path)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False, env=env)


def pending(proxy: ProxyProcess, count: int = 1, timeout: float = 20) -> list[dict[str, Any]]:
    """The pending requests, once there are `count` of them."""
    deadline = time.monotonic() + timeout
    while True:
        listed = approvals_cli(proxy, "list", "--json")
        assert listed.returncode == 0, listed.stderr
        requests: list[dict[str, Any]] = json.loads(listed.stdout)["requests"]
        if len(requests) >= count:
            return requests
        assert time.monotonic() < deadline, f"{len(requests)} pending requests, expected {count}"
        time.sleep(0.1)


def settled(proxy: ProxyProcess, approval_id: str, status: str, timeout: float = 10) -> dict[str, Any]:
    """The request once it has `status` (the proxy records some changes just after answering)."""
    deadline = time.monotonic() + timeout
    while True:
        shown: dict[str, Any] = json.loads(approvals_cli(proxy, "show", approval_id, "--json").stdout)["request"]
        if shown["status"] == status or time.monotonic() > deadline:
            return shown
        time.sleep(0.2)


def approve(proxy: ProxyProcess, approval_id: str) -> subprocess.CompletedProcess[str]:
    return approvals_cli(proxy, "approve", approval_id, "--as", "alice", "--reason", "ticket OPS-42",
                         secret="alice-secret")


class Background:
    """Runs a client call in a thread (it blocks while held) and keeps its result or error."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None

        def run() -> None:
            try:
                self.result = call()
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def wait(self, timeout: float = 30) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the client is still waiting"
        if self.error is not None:
            raise self.error
        return self.result

    @property
    def waiting(self) -> bool:
        return self.thread.is_alive()
