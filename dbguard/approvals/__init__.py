# dbguard/approvals/ — the approval queue: held statements waiting for a person's decision.
# model.py (what a request is, statuses, ids, errors, its JSON form), store.py (the queue in the
# journal's store: tables and migrations, create / decide / consume / expire, each journaled
# in the same transaction, wake-ups for watchers), webhooks.py (JSON POSTs on creation and
# resolution). Depends on dbguard.journal and the standard library. It must not authenticate
# anyone (cli_approvals.py checks secrets), hold sessions or touch sockets (the session side
# calls ApprovalStore from a thread of its own). This file re-exports what the rest of
# dbguard uses.
"""The approval queue: requests, decisions, grants used once, journaled and announced."""

from __future__ import annotations

from dbguard.approvals.model import (
    ApprovalError,
    ApprovalNotFound,
    ApprovalRequest,
    ApprovalStatus,
    BlastRadius,
    DecisionRefused,
    Refusal,
    Verdict,
    fingerprint,
    new_approval_id,
    request_to_dict,
)
from dbguard.approvals.store import CHANNEL, CURRENT_APPROVALS_SCHEMA_VERSION, ApprovalStore
from dbguard.approvals.webhooks import WebhookNotifier, summary_text

__all__ = [
    "CHANNEL",
    "CURRENT_APPROVALS_SCHEMA_VERSION",
    "ApprovalError",
    "ApprovalNotFound",
    "ApprovalRequest",
    "ApprovalStatus",
    "ApprovalStore",
    "BlastRadius",
    "DecisionRefused",
    "Refusal",
    "Verdict",
    "WebhookNotifier",
    "fingerprint",
    "new_approval_id",
    "request_to_dict",
    "summary_text",
]
