# dbguard/approvals/model.py — owns what an approval request is: its fields (who asked, what
# SQL, which rules, the blast-radius preview, who decided and when), its statuses and their
# meaning, approval ids (short and unguessable), the fingerprint that matches a re-sent
# statement to its grant (retry mode), the errors the queue raises, and the JSON form shown by
# the CLI and sent to webhooks. It must not do I/O.
from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Final

from dbguard.journal.events import iso_from_us

__all__ = [
    "ID_PREFIX",
    "ApprovalError",
    "ApprovalNotFound",
    "ApprovalRequest",
    "ApprovalStatus",
    "BlastRadius",
    "DecisionRefused",
    "Refusal",
    "Verdict",
    "fingerprint",
    "new_approval_id",
    "request_to_dict",
]

ID_PREFIX: Final = "ap_"
# 10 base32 characters: 50 random bits. Ids are shown to people and typed; nobody can guess one.
_ID_CHARS: Final = 10


def new_approval_id() -> str:
    """`ap_` and 10 random lowercase base32 characters, e.g. ap_k3x9qzt2mf."""
    return ID_PREFIX + base64.b32encode(secrets.token_bytes(8)).decode("ascii").lower()[:_ID_CHARS]


class ApprovalStatus(StrEnum):
    PENDING = "pending"  # waiting for a person (until expires_us)
    APPROVED = "approved"  # granted; the statement may run once (until expires_us: the grant's end)
    DENIED = "denied"
    EXPIRED = "expired"  # nobody decided in time, or its session ended first
    USED = "used"  # approved and consumed: the statement ran (or was sent to run) once


class Verdict(StrEnum):
    APPROVE = "approve"
    DENY = "deny"


class Refusal(StrEnum):
    """Why the queue refused a decision or a use of a grant (DecisionRefused.code)."""

    NOT_PENDING = "not-pending"  # already approved, denied, expired or used
    EXPIRED = "expired"  # pending, but its time ran out before the decision (now recorded as expired)
    SELF_APPROVAL = "self-approval"  # the deciding identity is the one that issued the statement
    NOT_AN_APPROVER = "not-an-approver"  # the rule names approver roles; the decider has none of them
    NOT_APPROVED = "not-approved"  # consume(): the request is not an approved, unused grant
    GRANT_EXPIRED = "grant-expired"  # consume(): approved, but the grant's lifetime is over


class ApprovalError(Exception):
    """Base of the queue's own errors (the store's failures are journal.StoreError)."""


class ApprovalNotFound(ApprovalError):
    def __init__(self, approval_id: str) -> None:
        super().__init__(f"no approval request {approval_id!r}")
        self.approval_id = approval_id


class DecisionRefused(ApprovalError):
    """The queue did nothing; `code` says why, the message says it to a person."""

    def __init__(self, code: Refusal, message: str, request: ApprovalRequest) -> None:
        super().__init__(message)
        self.code = code
        self.request = request


@dataclass(frozen=True, slots=True)
class BlastRadius:
    """What the statement would touch, measured by the session side before asking."""

    estimated_rows: int | None = None  # the planner's estimate
    exact_rows: int | None = None  # counted in a rolled-back transaction, where that was safe
    note: str = ""  # how it was measured, or why not


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    """One held statement waiting for (or past) a decision. `id`, `created_us` and `expires_us`
    may be left empty when creating: ApprovalStore.create() fills them. Times are integer
    microseconds since 1970 (UTC), like the journal's."""

    identity: str
    identity_kind: str  # agent | human | service
    sql: str
    roles: tuple[str, ...] = ()
    session_id: str = ""
    statement_seq: int | None = None
    client_address: str = ""
    listener: str = ""
    database: str = ""
    protocol: str = ""  # postgres | mysql
    parameters: tuple[str | None, ...] | None = None  # bound values as text (None: SQL NULL)
    rule_ids: tuple[str, ...] = ()
    approvers: tuple[str, ...] = ()  # roles that may decide (empty: any identity but the requester)
    tables: tuple[str, ...] = ()
    intent: str = ""
    blast_radius: BlastRadius = field(default_factory=BlastRadius)
    id: str = ""
    created_us: int = 0
    expires_us: int = 0  # pending: the decision deadline; approved: the end of the grant
    status: ApprovalStatus = ApprovalStatus.PENDING
    decided_by: str = ""
    decided_us: int | None = None
    reason: str = ""
    used_us: int | None = None

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.identity, self.sql, self.parameters)

    def is_due(self, now_us: int) -> bool:
        """Pending and past its deadline (it expires at the next decision or sweep)."""
        return self.status is ApprovalStatus.PENDING and self.expires_us <= now_us

    def effective(self, now_us: int) -> ApprovalRequest:
        """As a person should see it now: a pending request past its deadline is expired."""
        return replace(self, status=ApprovalStatus.EXPIRED) if self.is_due(now_us) else self


def fingerprint(identity: str, sql: str, parameters: tuple[str | None, ...] | None) -> str:
    """What makes a re-sent statement the same one: identity, exact text and parameters."""
    data = json.dumps([identity, sql, None if parameters is None else list(parameters)], ensure_ascii=False,
                      separators=(",", ":"))
    return hashlib.sha256(data.encode("utf-8", "surrogatepass")).hexdigest()


def _iso(time_us: int | None) -> str | None:
    return None if time_us is None else iso_from_us(time_us)


def request_to_dict(request: ApprovalRequest) -> dict[str, Any]:
    """The JSON form (CLI --json, webhooks): times as ISO 8601 UTC."""
    r = request
    return {
        "id": r.id,
        "status": r.status.value,
        "created": _iso(r.created_us),
        "expires": _iso(r.expires_us),
        "identity": r.identity,
        "identity_kind": r.identity_kind,
        "roles": list(r.roles),
        "session_id": r.session_id,
        "statement_seq": r.statement_seq,
        "client_address": r.client_address,
        "listener": r.listener,
        "database": r.database,
        "protocol": r.protocol,
        "sql": r.sql,
        "parameters": None if r.parameters is None else list(r.parameters),
        "rule_ids": list(r.rule_ids),
        "approvers": list(r.approvers),
        "tables": list(r.tables),
        "intent": r.intent,
        "blast_radius": {
            "estimated_rows": r.blast_radius.estimated_rows,
            "exact_rows": r.blast_radius.exact_rows,
            "note": r.blast_radius.note,
        },
        "decided_by": r.decided_by,
        "decided": _iso(r.decided_us),
        "reason": r.reason,
        "used": _iso(r.used_us),
    }
