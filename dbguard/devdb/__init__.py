# dbguard.devdb — throwaway development databases for the test suite and `dbguard demo`.
# Owns nothing itself: re-exports the PostgreSQL helpers from dbguard.devdb.postgres.
# Must not touch the machine's stock database services.
from dbguard.devdb.postgres import (
    DevDbError,
    HbaMethod,
    PasswordEncryption,
    ThrowawayPostgres,
    find_postgres_bindir,
)

__all__ = [
    "DevDbError",
    "HbaMethod",
    "PasswordEncryption",
    "ThrowawayPostgres",
    "find_postgres_bindir",
]
