"""The plan cache of MySQL masking (`Catalog.plans`, per session): a result like an earlier one
is neither decoded nor planned again, and whatever a plan depends on (the catalog, the masks,
the protocol, the statement's lineage) gets its own plan or drops the cached ones; sequences
of results come out byte for byte as with plans built anew."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbguard.masking.session_masks import SessionMasks
from dbguard.policy.rules import Mask, MaskStrategy, Policy
from dbguard.session import mysql_masking
from dbguard.session.mysql_masking import Catalog, ResponseMasking, ResultPlan
from dbguard.wire.mysql import messages as m
from tests.unit.test_mysql_masking import EMAIL, ID, NAME, SSN, VIEW_V, catalog, coldef, computed, masks

MASKS = masks()
OTHER = masks(Policy(masks=(Mask("names", columns=("customers.name",), strategy=MaskStrategy.FULL),)))
NO_CAPABILITIES = m.Capability(0)


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many plans masking builds (one per result it has not seen before)."""
    count = [0]
    build = mysql_masking.build_plan

    def spy(*args: Any, **kwargs: Any) -> ResultPlan:
        count[0] += 1
        return build(*args, **kwargs)

    monkeypatch.setattr(mysql_masking, "build_plan", spy)
    return count


def result(cat: Catalog, sql: str, definitions: Sequence[m.ColumnDefinition41], rows: Sequence[bytes], *,
           session_masks: SessionMasks | None = MASKS, binary: bool = False) -> tuple[list[bytes], tuple[object, ...]]:
    """One command's response through masking: the rows as the client gets them, the counts."""
    assert session_masks is not None
    response = ResponseMasking(session_masks, cat, sql=sql, database="app", binary=binary)
    response.column_count(len(definitions))
    for definition in definitions:
        response.definition(definition.encode(), NO_CAPABILITIES)
    out = [response.row(row) for row in rows]
    return out, response.result_end()


ROW = m.encode_text_row([b"7", b"alice@example.com", b"Alice"])
MASKED = b"\x017" + b"\x10****@example.com" + b"\x05Alice"


def test_a_repeated_result_is_planned_once(built: list[int]) -> None:
    cat = catalog()
    for i in range(3):  # other literals, the same lineage: one plan
        out, counts = result(cat, f"SELECT id, email, name FROM customers WHERE id = {i}", [ID, EMAIL, NAME],
                             [ROW, ROW])
        assert out == [MASKED, MASKED]
        assert counts == (("email", 2),)  # per result set, not summed
    assert built == [1]


def test_the_same_definitions_with_another_lineage_get_their_own_plan(built: list[int]) -> None:
    cat = catalog()
    row = m.encode_text_row([b"alice@example.com"])
    for _ in range(2):
        assert result(cat, "SELECT UPPER(email) AS x FROM customers", [computed(b"x")], [row])[0] == [
            b"\x10****@example.com"]
        assert result(cat, "SELECT UPPER(name) AS x FROM customers", [computed(b"x")], [row])[0] == [row]
    assert built == [2]


def test_masks_and_protocol_get_their_own_plans() -> None:
    cat = catalog()
    assert result(cat, "SELECT id, email, name FROM customers", [ID, EMAIL, NAME], [ROW])[0] == [MASKED]
    assert result(cat, "SELECT id, email, name FROM customers", [ID, EMAIL, NAME], [ROW], session_masks=OTHER)[0] \
        == [m.encode_text_row([b"7", b"alice@example.com", b"****"])]
    types = [m.ColumnType.LONG, m.ColumnType.VAR_STRING, m.ColumnType.VAR_STRING]
    binary = m.encode_binary_row([b"\x07\x00\x00\x00", b"alice@example.com", b"Alice"], types)
    out, _ = result(cat, "SELECT id, email, name FROM customers", [ID, EMAIL, NAME], [binary], binary=True)
    assert m.decode_binary_row(out[0], types) == [b"\x07\x00\x00\x00", b"****@example.com", b"Alice"]


def test_a_catalog_change_drops_the_plans(built: list[int]) -> None:
    cat = Catalog()
    cat.replace([("app", "customers", None)])  # the view `v` is not known yet: anything, the strictest mask
    from_view = coldef(b"email", table=b"v")
    row = m.encode_text_row([b"alice@example.com"])
    assert result(cat, "SELECT email FROM v", [from_view], [row])[0] == [b"\xfb"]  # `null`, the strictest
    assert result(cat, "SELECT email FROM v", [from_view], [row])[0] == [b"\xfb"]
    assert built == [1]
    generation = cat.generation
    cat.replace([("app", "customers", None), ("app", "v", VIEW_V)])  # the read after the response
    assert cat.generation > generation
    assert not cat.plans
    assert result(cat, "SELECT email FROM v", [from_view], [row])[0] == [b"\x10****@example.com"]
    assert built == [2]
    cat.invalidate()  # DDL
    assert not cat.plans
    result(cat, "SELECT email FROM v", [from_view], [row])
    assert built == [3]


def test_a_cursor_plan_is_its_own_copy() -> None:
    """COM_STMT_FETCH keeps the plan of its cursor across fetches: a copy, whose counts do not
    mix with another result of the same shape's."""
    cat = catalog()
    response = ResponseMasking(MASKS, cat, sql="SELECT id, email, name FROM customers", database="app", binary=False)
    response.column_count(3)
    for definition in (ID, EMAIL, NAME):
        response.definition(definition.encode(), NO_CAPABILITIES)
    cursor = response.plan
    assert cursor is not None
    assert cursor.row(ROW) == MASKED
    assert result(cat, "SELECT id, email, name FROM customers", [ID, EMAIL, NAME], [ROW, ROW])[1] == (("email", 2),)
    assert cursor.take_counts() == (("email", 1),)


def test_the_plan_cache_is_bounded() -> None:
    cat = catalog()
    for i in range(mysql_masking._MAX_PLANS + 20):
        result(cat, f"SELECT id AS c{i} FROM customers", [coldef(f"c{i}".encode(), org=b"id")], [])
        assert len(cat.plans) <= mysql_masking._MAX_PLANS


# ------------------------------------------------------------------ cached = built anew

_SHAPES = (
    ("SELECT id, email, name FROM customers", (ID, EMAIL, NAME)),
    ("SELECT id, email, name FROM customers WHERE id = 1", (ID, EMAIL, NAME)),
    ("SELECT email, name, ssn FROM customers", (EMAIL, NAME, SSN)),
    ("SELECT UPPER(email) AS x FROM customers", (computed(b"x"),)),
    ("SELECT UPPER(name) AS x FROM customers", (computed(b"x"),)),
    ("SELECT email FROM v", (coldef(b"email", table=b"v"),)),
    ("SELECT email FROM tmp", (coldef(b"email", table=b"tmp"),)),
)
_VALUES = st.sampled_from([b"alice@example.com", b"4111 1111 1111 1111", b"Bob", b"123-45-6789", b"", None])
_CATALOGS = ([("app", "customers", None)], [("app", "customers", None), ("app", "v", VIEW_V)],
             [("app", "customers", None), ("app", "v", VIEW_V), ("app", "tmp", None)])


class _NoPlans(dict[tuple[object, ...], ResultPlan]):
    """A plan cache that keeps nothing: every plan is built anew."""

    def __setitem__(self, key: tuple[object, ...], value: ResultPlan) -> None:
        pass


@st.composite
def _steps(draw: st.DrawFn) -> list[tuple[str, int, list[bytes]]]:
    steps: list[tuple[str, int, list[bytes]]] = [("masks", draw(st.integers(0, 2)), [])]
    for _ in range(draw(st.integers(1, 20))):
        kind = draw(st.sampled_from(["result"] * 5 + ["masks", "masks", "catalog", "invalidate"]))
        if kind == "result":
            shape = draw(st.integers(0, len(_SHAPES) - 1))
            width = len(_SHAPES[shape][1])
            rows = [m.encode_text_row([draw(_VALUES) for _ in range(width)]) for _ in range(draw(st.integers(0, 3)))]
            steps.append((kind, shape, rows))
        else:
            steps.append((kind, draw(st.integers(0, 2)), []))
    return steps


@settings(max_examples=200, deadline=None)
@given(_steps())
def test_cached_plans_mask_as_plans_built_anew(steps: list[tuple[str, int, list[bytes]]]) -> None:
    session_masks = [MASKS, OTHER, masks()]
    current = MASKS
    cached, fresh = Catalog(), Catalog()
    fresh.plans = _NoPlans()
    for cat in (cached, fresh):
        cat.replace(_CATALOGS[0])
    for kind, argument, rows in steps:
        if kind == "masks":
            current = session_masks[argument]
        elif kind == "catalog":
            for cat in (cached, fresh):
                cat.replace(_CATALOGS[argument])
        elif kind == "invalidate":
            for cat in (cached, fresh):
                cat.invalidate()
        else:
            sql, definitions = _SHAPES[argument]
            assert result(cached, sql, definitions, rows, session_masks=current) == \
                result(fresh, sql, definitions, rows, session_masks=current)
            assert cached.stale == fresh.stale  # (an unknown table still asks for a new read)
