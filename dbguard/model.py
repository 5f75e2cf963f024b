"""Shared vocabulary of dbguard: who is connected, what they asked, what was decided.

Owns the frozen value types that cross layer boundaries (session -> policy -> journal).
It imports nothing from dbguard; every other package may import it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol


class IdentityKind(enum.StrEnum):
    AGENT = "agent"
    HUMAN = "human"
    SERVICE = "service"


@dataclass(frozen=True, slots=True)
class Identity:
    """A dbguard identity as the session sees it once authenticated (never its secret)."""

    name: str
    kind: IdentityKind
    roles: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """Facts about one client session, fixed once the client is authenticated."""

    session_id: str
    listener: str
    protocol: str  # "postgres" | "mysql"
    identity: Identity
    client_address: str
    database: str
    application_name: str = ""
    tls: bool = False


class StatementSource(enum.StrEnum):
    """Where a SQL text entered the proxy."""

    SIMPLE_QUERY = "query"  # PostgreSQL Query message / MySQL COM_QUERY
    PARSE = "parse"  # PostgreSQL Parse message / MySQL COM_STMT_PREPARE


class StatementRequest(NamedTuple):
    """One SQL text at the decision point, before anything is sent upstream.

    A NamedTuple rather than a frozen dataclass: it is built once per statement on the hot
    path, and a tuple costs a fraction of a frozen dataclass's __init__.
    """

    session: SessionInfo
    sql: str
    source: StatementSource
    statement_name: str = ""  # extended protocol: prepared statement name ("" = unnamed)


class Action(enum.StrEnum):
    ALLOW = "allow"
    HOLD = "hold"
    BLOCK = "block"


@dataclass(frozen=True, slots=True)
class Decision:
    """What the policy decided for one statement (or one multi-statement message)."""

    action: Action
    rule_ids: tuple[str, ...] = ()
    reason: str = ""
    hint: str = ""
    enforced: bool = True
    details: dict[str, str] = field(default_factory=dict)


ALLOW = Decision(Action.ALLOW)


class Gate(Protocol):
    """The single decision point every SQL text passes through.

    Implementations are pure and fast (they run on the event loop for every statement);
    anything slow (a hold waiting for a person) is expressed in the returned Decision and
    carried out by the session, never by blocking here.
    """

    def decide(self, request: StatementRequest) -> Decision: ...


class AllowAllGate:
    """The gate before any policy is configured: every statement is allowed."""

    def decide(self, request: StatementRequest) -> Decision:
        return ALLOW
