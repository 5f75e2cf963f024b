"""The PostgreSQL catalog as masking needs it: table OIDs named, views and their lineage.

Owns: `PgCatalogs`, one per listener: a `CatalogCache` per database (shared by that
database's sessions, with the result plans built from it, which every fill drops) and the
lookups that fill it, on a connection of its own to the upstream (the listener's credentials
and TLS mode), kept open and used from one worker thread at a time. A lookup that fails
leaves the OIDs unknown, which masking treats as untraceable (fail closed: the strictest
mask); the failure is logged without SQL or data.

Must not: run anything but catalog reads, log credentials, or block the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Iterable
from typing import Any, Final

from dbguard.model import UNTRACEABLE
from dbguard.runtime.libpq import connection_params
from dbguard.session.pg_actions import UpstreamSettings
from dbguard.session.pg_masking import CatalogCache, CatalogRequest, Relation, View
from dbguard.sql.pg_lineage import result_lineage

__all__ = ["PgCatalogs"]

log = logging.getLogger("dbguard.masking")

_APPLICATION: Final = "dbguard catalog"
_TIMEOUT_MS: Final = 5000

# One row per column: the relation, the column, its type (a domain's base type and typmod, one
# level down: masking knows base types) and whether it is generated (COPY leaves those out).
_COLUMNS: Final = """
SELECT c.oid::int8, n.nspname, c.relname, c.relkind::text, a.attnum::int4, a.attname,
       (CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END)::int8,
       (CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END)::int4,
       a.attgenerated::text
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
"""
_RELATIONS_SQL: Final = _COLUMNS + "WHERE c.oid = ANY(%s::oid[])"
# The relations a COPY names: in that schema, or in any schema for an unqualified name (the
# session's search_path is not known here).
_NAMED_SQL: Final = _COLUMNS + "WHERE c.relname = %s AND n.nspname = coalesce(%s, n.nspname)"

_VIEWS_SQL: Final = """
SELECT n.nspname, c.relname, pg_catalog.pg_get_viewdef(c.oid),
       ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum)
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('v', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
"""


# What one lookup found: relations by OID, the views (None: not asked), relations by name.
_Answer = tuple[dict[int, Relation], dict[tuple[str, str], View] | None,
                dict[tuple[str | None, str], tuple[Relation, ...]]]


def _relations(rows: Iterable[tuple[Any, ...]]) -> dict[int, Relation]:
    """Relations from the rows of `_COLUMNS`, by OID."""
    found: dict[int, tuple[str, str, str, dict[int, str], dict[int, tuple[int, int]], set[int]]] = {}
    for oid, schema, name, kind, attnum, attname, type_oid, typmod, generated in rows:
        entry = found.setdefault(int(oid), (schema, name, kind, {}, {}, set()))
        if attnum is not None:
            entry[3][int(attnum)] = attname
            entry[4][int(attnum)] = (int(type_oid), int(typmod))
            if generated:
                entry[5].add(int(attnum))
    return {oid: Relation(s, n, k, cols, types, frozenset(gen)) for oid, (s, n, k, cols, types, gen) in found.items()}


class PgCatalogs:
    """The catalogs of one listener's upstream, per database."""

    def __init__(self, upstream: UpstreamSettings) -> None:
        self.upstream = upstream
        self._caches: dict[str, CatalogCache] = {}
        self._connections: dict[str, Any] = {}
        self._lock = threading.Lock()

    def cache(self, database: str) -> CatalogCache:
        cache = self._caches.get(database)
        if cache is None:
            cache = self._caches[database] = CatalogCache()
        return cache

    async def resolve(self, database: str, request: CatalogRequest) -> None:
        """Fill the database's cache with what `request` asks; never raises."""
        cache = self.cache(database)
        try:
            relations, views, named = await asyncio.to_thread(self._lookup, database, request)
        except Exception as exc:  # any failure: the OIDs stay unknown, masking fails closed
            log.warning("masking.catalog_failed", extra={"database": database, "error": type(exc).__name__})
            relations, views, named = {}, ({} if request.views else None), {}
        for oid in request.oids:
            cache.relations[oid] = relations.get(oid)
        if request.views and cache.views is None:
            cache.views = views if views is not None else {}
        for name in request.names:  # a name not found: () (COPY then masks by name, typed text)
            cache.named[name] = named.get(name, ())
        cache.changed()  # (the result plans built from what it said before are dropped)

    def close(self) -> None:
        with self._lock:
            for conn in self._connections.values():
                with contextlib.suppress(Exception):
                    conn.close()
            self._connections.clear()

    # ------------------------------------------------------------------ worker thread

    def _lookup(self, database: str, request: CatalogRequest) -> _Answer:
        with self._lock:
            try:
                return self._query(self._connection(database), request)
            except Exception:
                conn = self._connections.pop(database, None)  # broken: reconnect next time
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                raise

    def _query(self, conn: Any, request: CatalogRequest) -> _Answer:
        relations: dict[int, Relation] = {}
        if request.oids:
            relations = _relations(conn.execute(_RELATIONS_SQL, [sorted(request.oids)]))
        views: dict[tuple[str, str], View] | None = None
        if request.views:
            views = {}
            for schema, name, definition, columns in conn.execute(_VIEWS_SQL):
                lineage = result_lineage(definition) if definition else UNTRACEABLE
                views[(schema, name)] = View(schema, name, tuple(columns), lineage)
        named: dict[tuple[str | None, str], tuple[Relation, ...]] = {}
        for schema, name in request.names:
            found = _relations(conn.execute(_NAMED_SQL, [name, schema]))
            named[(schema, name)] = tuple(found[oid] for oid in sorted(found))
        return relations, views, named

    def _connection(self, database: str) -> Any:
        conn = self._connections.get(database)
        if conn is not None and not conn.closed:
            return conn
        import psycopg

        params = connection_params(self.upstream, database, application=_APPLICATION, connect_timeout=5,
                                   options=f"-c statement_timeout={_TIMEOUT_MS} -c default_transaction_read_only=on")
        conn = psycopg.connect(autocommit=True, **params)
        self._connections[database] = conn
        return conn
