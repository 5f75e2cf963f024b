# dbguard/approvals/webhooks.py — owns telling the outside world about approval requests:
# `approvals.webhooks` URLs get a JSON POST ({"text": a Slack-compatible summary, "event",
# "request"}) when a request is created and when it is resolved (approved, denied, expired).
# Each POST runs on a daemon thread with a short timeout; a failure is logged
# (`approvals.webhook_failed`, the URL shown without its path: webhook URLs carry tokens) and
# never delays or undoes a decision. It must not touch the store or decide anything.
# urllib.request (with http.client and email) is imported only by a notifier that has URLs, so
# a proxy without webhooks does not keep it resident.
from __future__ import annotations

import importlib
import json
import logging
import threading
import time
from collections.abc import Sequence
from typing import Final
from urllib.parse import urlsplit

from dbguard.approvals.model import ApprovalRequest, request_to_dict
from dbguard.journal.events import ApprovalEventKind, iso_from_us

__all__ = ["DEFAULT_WEBHOOK_TIMEOUT", "WebhookNotifier", "redact_url", "summary_text"]

DEFAULT_WEBHOOK_TIMEOUT: Final = 5.0
_SQL_SHOWN: Final = 300

log = logging.getLogger("dbguard.approvals")


def redact_url(url: str) -> str:
    """scheme://host[:port]/… : enough to recognise the endpoint, never its token."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/…"


def _sql_snippet(sql: str) -> str:
    one_line = " ".join(sql.split())
    if len(one_line) > _SQL_SHOWN:
        one_line = one_line[: _SQL_SHOWN - 1] + "…"
    return one_line.replace("`", "'")


def summary_text(event: ApprovalEventKind, request: ApprovalRequest) -> str:
    """One Slack-compatible message (mrkdwn) for the event."""
    r = request
    where = f"{r.database or '?'} via {r.listener or '?'}"
    rules = ", ".join(r.rule_ids) or "-"
    if event is ApprovalEventKind.REQUESTED:
        rows = ""
        if r.blast_radius.exact_rows is not None:
            rows = f", touches {r.blast_radius.exact_rows} rows"
        elif r.blast_radius.estimated_rows is not None:
            rows = f", ~{r.blast_radius.estimated_rows} rows (estimate)"
        approvers = f" (approvers: {', '.join(r.approvers)})" if r.approvers else ""
        intent = f"\nintent: {r.intent}" if r.intent else ""
        return (f":hourglass: dbguard: *{r.identity}* ({r.identity_kind}) asks to run on {where}, "
                f"rule {rules}{rows}:\n```{_sql_snippet(r.sql)}```{intent}\n"
                f"`dbguard approvals approve {r.id} --as NAME`{approvers} or "
                f"`dbguard approvals deny {r.id} --reason … --as NAME`; expires {iso_from_us(r.expires_us)}")
    head = {
        ApprovalEventKind.APPROVED: f":white_check_mark: dbguard: {r.id} approved by *{r.decided_by}*",
        ApprovalEventKind.DENIED: f":no_entry: dbguard: {r.id} denied by *{r.decided_by}*",
        ApprovalEventKind.EXPIRED: f":alarm_clock: dbguard: {r.id} expired",
    }[event]
    reason = f": {r.reason}" if r.reason else ""
    return f"{head}{reason} ({r.identity} on {where}: `{_sql_snippet(r.sql)[:80]}`)"


class WebhookNotifier:
    """POSTs approval events to webhook URLs from daemon threads. `flush()` waits (boundedly)
    for the POSTs started so far: a short-lived process (the CLI) calls it before exiting."""

    def __init__(self, urls: Sequence[str], *, timeout: float = DEFAULT_WEBHOOK_TIMEOUT) -> None:
        self.urls = tuple(urls)
        self.timeout = timeout
        if self.urls:  # loaded now rather than by the first POST's thread
            importlib.import_module("urllib.request")
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def send(self, event: ApprovalEventKind, request: ApprovalRequest) -> None:
        if not self.urls:
            return
        body = json.dumps(
            {"text": summary_text(event, request), "event": event.value, "request": request_to_dict(request)},
            ensure_ascii=False,
        ).encode("utf-8", "surrogatepass")
        for url in self.urls:
            thread = threading.Thread(target=self._post, args=(url, body, event, request.id),
                                      name="dbguard-webhook", daemon=True)
            with self._lock:
                self._threads = [t for t in self._threads if t.is_alive()]
                self._threads.append(thread)
            thread.start()

    def _post(self, url: str, body: bytes, event: ApprovalEventKind, approval_id: str) -> None:
        import urllib.error
        import urllib.request

        request = urllib.request.Request(  # noqa: S310 (http(s) only: config.py validates the scheme)
            url, data=body, method="POST",
            headers={"Content-Type": "application/json; charset=utf-8", "User-Agent": "dbguard"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 (as above)
                response.read(65536)
        except (urllib.error.URLError, OSError, ValueError) as e:
            log.warning("approvals.webhook_failed", extra={
                "url": redact_url(url), "event": event.value, "approval_id": approval_id,
                "error": str(getattr(e, "reason", e)),
            })

    def flush(self, timeout: float | None = None) -> None:
        """Wait for the POSTs started so far, at most `timeout` seconds in all (default: the
        per-POST timeout plus a second)."""
        deadline = time.monotonic() + (self.timeout + 1.0 if timeout is None else timeout)
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
