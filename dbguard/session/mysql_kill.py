"""KILL through a MySQL listener: which server thread a client's KILL may end.

Owns: reading the plain form of a KILL statement (`KILL [CONNECTION | QUERY] <id>`, alone in
its message) and COM_PROCESS_KILL's id, and resolving that id to a server thread id under two
rules:

- The connection id a client learns from its greeting is dbguard's (the greeting goes out
  before the server connection exists), and clients pass it to KILL: the mariadb CLI's Ctrl-C
  sends `KILL QUERY <that id>`, mysql-connector's `cmd_process_kill` sends `KILL <id>`.
  dbguard's ids are drawn from [DBGUARD_ID_FLOOR, 2**31), above any thread id a server hands
  out, so they are told apart and mapped to the session's server thread.
- Every dbguard session logs in upstream with the same service account, so the server would
  let any of them kill any other. A KILL of a thread that belongs to a dbguard session is
  allowed only to the same dbguard identity; to anyone else it is an unknown thread (ERR 1094),
  as the server says for a thread one may not see. A thread that is not dbguard's is left to
  the policy (the statement was decided like any other) and to the server's own privileges.

Must not touch: sockets, the gate; the session calls `resolve` only for a statement the policy
allowed, and the listener supplies the `KillDirectory`.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from dbguard.session.journal import SessionJournal

DBGUARD_ID_FLOOR: Final = 1 << 30
ER_NO_SUCH_THREAD: Final = 1094  # HY000: "Unknown thread id: %lu"

_KILL: Final = re.compile(rb"\s*kill\s+(?:(connection|query)\s+)?([0-9]{1,10})\s*;?\s*\Z", re.IGNORECASE)


def new_connection_id() -> int:
    """A connection id for a greeting: random, in [DBGUARD_ID_FLOOR, 2**31)."""
    return DBGUARD_ID_FLOOR | secrets.randbits(30)


class KillDirectory(Protocol):
    """The listener's live sessions, as KILL needs them."""

    def upstream_thread(self, connection_id: int) -> tuple[str, int] | None:
        """(identity name, server thread id) of the live session with this dbguard id."""

    def thread_owner(self, thread_id: int) -> str | None:
        """The identity name of the live dbguard session on this server thread, if any."""

    def journal_of(self, thread_id: int) -> SessionJournal | None:
        """The journal of the live dbguard session on this server thread, if it has one (a
        KILL of its statement is recorded there as a cancel)."""


@dataclass(frozen=True, slots=True)
class KillRequest:
    scope: bytes  # b"CONNECTION" or b"QUERY"
    thread_id: int  # as the client wrote it

    def statement(self, thread_id: int) -> bytes:
        return b"KILL " + self.scope + b" " + str(thread_id).encode("ascii")


def parse_kill(sql: bytes) -> KillRequest | None:
    """The plain form of KILL alone in a message, else None (other forms are left as written)."""
    match = _KILL.match(sql)
    if match is None:
        return None
    scope = (match.group(1) or b"connection").upper()
    return KillRequest(scope, int(match.group(2)))


def resolve(request: KillRequest, identity: str, directory: KillDirectory) -> int | None:
    """The server thread to kill for `identity`, or None: answer ER_NO_SUCH_THREAD."""
    if request.thread_id >= DBGUARD_ID_FLOOR:
        found = directory.upstream_thread(request.thread_id)
        if found is None or found[0] != identity:
            return None
        return found[1]
    owner = directory.thread_owner(request.thread_id)
    if owner is not None and owner != identity:
        return None
    return request.thread_id
