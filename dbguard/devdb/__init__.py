# dbguard.devdb — throwaway development databases for the test suite and `dbguard demo`.
# Owns nothing itself: re-exports the PostgreSQL helpers from dbguard.devdb.postgres and the
# MariaDB ones from dbguard.devdb.mariadb, and DevDbError from dbguard.devdb.processes.
# Must not touch the machine's stock database services.
from dbguard.devdb.mariadb import ThrowawayMariaDB, find_mariadb_binaries
from dbguard.devdb.postgres import (
    HbaMethod,
    PasswordEncryption,
    ThrowawayPostgres,
    find_postgres_bindir,
)
from dbguard.devdb.processes import DevDbError

__all__ = [
    "DevDbError",
    "HbaMethod",
    "PasswordEncryption",
    "ThrowawayMariaDB",
    "ThrowawayPostgres",
    "find_mariadb_binaries",
    "find_postgres_bindir",
]
