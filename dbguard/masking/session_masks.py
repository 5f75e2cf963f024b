"""Which masks apply to one session, and what each result column's sources call for.

Owns: `SessionMasks`, compiled once per session from the policy's `masks:` (the `unless`
exemptions are settled here, by identity and roles), answering "which mask, if any, covers this
column / this whole row / this lineage"; the order of strictness between strategies
(`STRICTNESS`); the content-detector masks that apply; `MaskDirectory`, the process's, which
follows policy reloads and gives each session a lookup that asks again only after one. Must
not: read wire messages, look up the catalog (the sessions resolve views and table OIDs first),
or mask values (`masking.strategies`, `masking.detectors`).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from dbguard.masking.detectors import DetectorSet, compile_detectors
from dbguard.model import SessionInfo, SourceColumn, StatementInfo, StatementKind
from dbguard.policy.rules import Mask, MaskStrategy, Policy

__all__ = ["STRICTNESS", "ColumnMask", "ContentMask", "MaskDirectory", "SessionMasks", "stricter"]

# When several masks cover one value the strictest wins: NULL reveals nothing, `full` only
# that a value exists, `hash` equality, `email` the domain, `partial` the last characters.
STRICTNESS: Final = (MaskStrategy.NULL, MaskStrategy.FULL, MaskStrategy.HASH, MaskStrategy.EMAIL,
                     MaskStrategy.PARTIAL)
_RANK: Final = {strategy: rank for rank, strategy in enumerate(STRICTNESS)}

# The `unless` of a mask names identity, identity_kind and roles only; conditions are tested
# against a statement, so this neutral one stands in.
_NO_STATEMENT: Final = StatementInfo(text="", command="", kinds=frozenset({StatementKind.OTHER}))


@dataclass(frozen=True, slots=True)
class ColumnMask:
    """The mask one result column gets: the strategy, and the ids of the masks behind it."""

    strategy: MaskStrategy
    mask_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ContentMask:
    """A `detect:` mask: its detectors and its strategy."""

    mask_id: str
    detectors: DetectorSet
    strategy: MaskStrategy


def stricter(a: ColumnMask | None, b: ColumnMask | None) -> ColumnMask | None:
    """The stricter of two masks, carrying the ids of both when they agree."""
    if a is None:
        return b
    if b is None or a == b:
        return a
    rank_a, rank_b = _RANK[a.strategy], _RANK[b.strategy]
    if rank_a == rank_b:
        return ColumnMask(a.strategy, tuple(dict.fromkeys(a.mask_ids + b.mask_ids)))
    return a if rank_a < rank_b else b


@dataclass(frozen=True, slots=True)
class _Glob:
    mask_id: str
    strategy: MaskStrategy
    schema: re.Pattern[str] | None  # None: the glob named no schema, every schema matches
    table: re.Pattern[str]
    column: re.Pattern[str]


def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(pattern.lower()))


def _glob(mask: Mask, text: str) -> _Glob:
    parts = text.split(".")
    schema = _compile(parts[0]) if len(parts) == 3 else None
    return _Glob(mask.id, mask.strategy, schema, _compile(parts[-2]), _compile(parts[-1]))


class SessionMasks:
    """The masks in force for one session. Build it with `for_session`, which gives None when
    no mask applies to the session at all (then results are relayed untouched)."""

    def __init__(self, globs: Iterable[_Glob], content: Iterable[ContentMask], hash_key: bytes) -> None:
        self._globs = tuple(globs)
        self.content = tuple(content)
        self.hash_key = hash_key
        self._cache: dict[SourceColumn, ColumnMask | None] = {}
        # The strictest of all column masks: what a value the analysis cannot trace gets.
        anything: ColumnMask | None = None
        for glob in self._globs:
            anything = stricter(anything, ColumnMask(glob.strategy, (glob.mask_id,)))
        self._anything = anything

    @classmethod
    def for_session(cls, policy: Policy, session: SessionInfo, hash_key: bytes) -> SessionMasks | None:
        globs: list[_Glob] = []
        content: list[ContentMask] = []
        for mask in policy.masks:
            if mask.unless is not None and mask.unless.holds(_NO_STATEMENT, session):
                continue  # exempt: `unless` holds for this identity
            globs.extend(_glob(mask, text) for text in mask.columns)
            if mask.detect:
                content.append(ContentMask(mask.id, compile_detectors(mask.detect), mask.strategy))
        if not globs and not content:
            return None
        return cls(globs, content, hash_key)

    @property
    def has_column_masks(self) -> bool:
        return bool(self._globs)

    def source(self, ref: SourceColumn) -> ColumnMask | None:
        """The mask a value coming from `ref` gets (None: not masked). An unqualified table
        matches a glob of any schema; a whole row ("*") matches every glob whose table part
        matches; the untraceable source matches every column mask."""
        if ref in self._cache:
            return self._cache[ref]
        found: ColumnMask | None
        if ref.table == "*":
            found = self._anything
        else:
            found = None
            schema = None if ref.schema is None else ref.schema.lower()
            table, column = ref.table.lower(), ref.column.lower()
            for glob in self._globs:
                if schema is not None and glob.schema is not None and not glob.schema.match(schema):
                    continue
                if not glob.table.match(table):
                    continue
                if column != "*" and not glob.column.match(column):
                    continue
                found = stricter(found, ColumnMask(glob.strategy, (glob.mask_id,)))
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[ref] = found
        return found

    def column(self, schema: str, table: str, column: str) -> ColumnMask | None:
        """The mask of one table column, as the catalog names it."""
        return self.source(SourceColumn(schema, table, column))

    def sources(self, refs: Iterable[SourceColumn]) -> ColumnMask | None:
        """The strictest mask of any of `refs`: a value derived from several columns is
        masked when any of them is."""
        found: ColumnMask | None = None
        for ref in refs:
            found = stricter(found, self.source(ref))
        return found


class MaskDirectory:
    """A process's masks: hands each session its `SessionMasks` and follows policy reloads.

    Shared by every listener; sessions ask per result set (`session`: the session's own
    lookup, which asks again only after a reload; or `for_session`, a dict lookup), so a
    reloaded policy applies from the next result set on, in open sessions too."""

    def __init__(self, policy: Policy, hash_key: bytes) -> None:
        self._policy = policy
        self.hash_key = hash_key
        self._by_identity: dict[tuple[object, ...], SessionMasks | None] = {}
        # Counts `replace_policy` calls: what a session's `session` lookup compares.
        self.generation = 0

    @property
    def active(self) -> bool:
        """False when the policy has no masks at all: nothing is ever rewritten."""
        return bool(self._policy.masks)

    def replace_policy(self, policy: Policy) -> None:
        self._policy = policy
        self._by_identity = {}
        self.generation += 1

    def for_session(self, session: SessionInfo) -> SessionMasks | None:
        if not self._policy.masks:
            return None
        identity = session.identity
        key = (identity.name, identity.kind, identity.roles, session.listener, session.database)
        try:
            return self._by_identity[key]
        except KeyError:
            pass
        masks = SessionMasks.for_session(self._policy, session, self.hash_key)
        if len(self._by_identity) > 1024:
            self._by_identity.clear()
        self._by_identity[key] = masks
        return masks

    def session(self, session: SessionInfo) -> Callable[[], SessionMasks | None]:
        """`for_session(session)` as a callable one session keeps and calls per result set:
        it looks the masks up once, then again only after `replace_policy` (the one thing
        that changes the answer: what it depends on, the identity with its roles, the
        listener and the database, is fixed for a session's life), so a call is one
        comparison."""
        generation = -1
        masks: SessionMasks | None = None

        def lookup() -> SessionMasks | None:
            nonlocal generation, masks
            if generation != self.generation:
                current = self.generation
                masks = self.for_session(session)
                generation = current
            return masks

        return lookup
