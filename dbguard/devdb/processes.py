# dbguard.devdb.processes — what every throwaway server needs from the OS, whatever the server.
# Owns: the DevDbError type, the loopback address, picking a free port, choosing the
# unprivileged OS user a server runs as when we are root, and checking that a directory can be
# reached by that user. Used by devdb.postgres and devdb.mariadb; knows nothing of either.
from __future__ import annotations

import os
import pwd
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Final

LOOPBACK: Final = "127.0.0.1"


class DevDbError(RuntimeError):
    """A throwaway server could not be found, started, stopped or set up."""


@dataclass(frozen=True)
class OsUser:
    """Who runs the server's programs. None of it applies unless we are root."""

    name: str
    uid: int
    gid: int


def server_os_user(env_var: str, preferred: str, program: str) -> OsUser | None:
    """As root, the unprivileged account a server runs as: $env_var, else `preferred`, else
    `nobody`. None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in (os.environ.get(env_var, ""), preferred, "nobody"):
        if not name:
            continue
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return OsUser(name=name, uid=entry.pw_uid, gid=entry.pw_gid)
    raise DevDbError(
        f"running as root, but neither an OS user {preferred!r} nor 'nobody' exists to run "
        f"{program} as; create one or set ${env_var}"
    )


def world_traversable(path: Path) -> bool:
    """Every directory from / down to path can be entered by any user."""
    current = path.resolve()
    return all(os.stat(directory).st_mode & 0o001 for directory in (current, *current.parents))


def pick_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port
