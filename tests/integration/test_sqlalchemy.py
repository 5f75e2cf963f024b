"""SQLAlchemy 2 ORM on psycopg (postgresql+psycopg://) through the proxy.

Covers declarative models created with create_all in a fresh schema, CRUD, relationships
(lazy, selectin and joined loading), a rolled-back transaction (checked on a direct
connection), and reflection of the shop tables through the proxy equalling reflection done
directly.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import (
    Engine,
    ForeignKey,
    MetaData,
    Numeric,
    String,
    create_engine,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    joinedload,
    mapped_column,
    relationship,
    selectinload,
)

from dbguard.devdb.postgres import ThrowawayPostgres
from tests.integration.harness import ProxyProcess

SCHEMA_PLACEHOLDER = "compat_schema"
SHOP_TABLES = ("customers", "products", "orders", "order_items", "payments")
SHOP_VIEWS = ("customer_contacts", "order_summary")


class Base(DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "authors"
    __table_args__ = {"schema": SCHEMA_PLACEHOLDER}  # noqa: RUF012 (SQLAlchemy's API)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    joined: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    books: Mapped[list[Book]] = relationship(back_populates="author", cascade="all, delete-orphan",
                                             order_by="Book.id")


class Book(Base):
    __tablename__ = "books"
    __table_args__ = {"schema": SCHEMA_PLACEHOLDER}  # noqa: RUF012 (SQLAlchemy's API)

    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey(f"{SCHEMA_PLACEHOLDER}.authors.id"))
    title: Mapped[str]
    price: Mapped[Decimal] = mapped_column(Numeric(8, 2))
    tags: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    published: Mapped[dt.date | None]
    author: Mapped[Author] = relationship(back_populates="books")


def url(dsn: str) -> str:
    return dsn.replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture
def schema(pg_server: ThrowawayPostgres) -> Iterator[str]:
    """A fresh schema name; whatever the test made in it is dropped afterwards."""
    name = f"sa_{uuid.uuid4().hex[:10]}"
    yield name
    engine = create_engine(url(pg_server.dsn()))
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
    engine.dispose()


@pytest.fixture
def proxied_engine(proxy: ProxyProcess, schema: str) -> Iterator[Engine]:
    engine = create_engine(url(proxy.dsn("migrator")), pool_size=3).execution_options(
        schema_translate_map={SCHEMA_PLACEHOLDER: schema})
    yield engine
    engine.dispose()


def test_models_crud_and_relationships(proxied_engine: Engine, schema: str,
                                       pg_server: ThrowawayPostgres) -> None:
    with proxied_engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    Base.metadata.create_all(proxied_engine)

    with Session(proxied_engine) as session, session.begin():
        ursula = Author(name="Ursula K. Le Guin", books=[
            Book(title="The Dispossessed", price=Decimal("12.50"), tags={"genre": "sf"},
                 published=dt.date(1974, 5, 1)),
            Book(title="A Wizard of Earthsea", price=Decimal("9.99"), tags={"genre": "fantasy"},
                 published=None),
        ])
        session.add_all([ursula, Author(name="Stanisław Lem 'Solaris' ✓", books=[
            Book(title="Solaris", price=Decimal("11.00"))])])

    with Session(proxied_engine) as session:
        # lazy loading
        ursula_again = session.scalars(select(Author).where(Author.name.like("Ursula%"))).one()
        assert [b.title for b in ursula_again.books] == ["The Dispossessed",
                                                         "A Wizard of Earthsea"]
        assert isinstance(ursula_again.joined, dt.datetime)
        # eager loading, both strategies
        authors = session.scalars(select(Author).options(selectinload(Author.books))
                                  .order_by(Author.id)).all()
        assert [(a.name, len(a.books)) for a in authors] == [
            ("Ursula K. Le Guin", 2), ("Stanisław Lem 'Solaris' ✓", 1)]
        books = session.scalars(select(Book).options(joinedload(Book.author))
                                .where(Book.tags["genre"].astext == "sf")).all()
        assert [(b.title, b.author.name, b.price) for b in books] == [
            ("The Dispossessed", "Ursula K. Le Guin", Decimal("12.50"))]

        # update and delete
        solaris = session.scalars(select(Book).where(Book.title == "Solaris")).one()
        solaris.price = Decimal("13.25")
        solaris.tags = {"genre": "sf", "translated": True}
        session.delete(ursula_again.books[1])
        session.commit()

        total = session.scalar(select(func.sum(Book.price)))
        assert total == Decimal("25.75")
        counts = session.execute(
            select(Author.name, func.count(Book.id)).join(Book, isouter=True)
            .group_by(Author.name).order_by(Author.name)).all()
        assert [tuple(c) for c in counts] == [("Stanisław Lem 'Solaris' ✓", 1),
                                              ("Ursula K. Le Guin", 1)]

    # What is committed is what a direct connection sees.
    direct = create_engine(url(pg_server.dsn()))
    try:
        with direct.connect() as conn:
            rows = conn.execute(text(
                f'SELECT b.title, b.price, b.tags, a.name FROM "{schema}".books b '
                f'JOIN "{schema}".authors a ON a.id = b.author_id ORDER BY b.id')).all()
    finally:
        direct.dispose()
    assert [tuple(r) for r in rows] == [
        ("The Dispossessed", Decimal("12.50"), {"genre": "sf"}, "Ursula K. Le Guin"),
        ("Solaris", Decimal("13.25"), {"genre": "sf", "translated": True},
         "Stanisław Lem 'Solaris' ✓"),
    ]


def test_rolled_back_transaction(proxied_engine: Engine, schema: str,
                                 pg_server: ThrowawayPostgres) -> None:
    with proxied_engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    Base.metadata.create_all(proxied_engine)

    with Session(proxied_engine) as session:
        session.add(Author(name="kept"))
        session.commit()
        session.add(Author(name="rolled back", books=[Book(title="gone", price=Decimal(1))]))
        session.flush()  # the INSERTs reached the server...
        assert session.scalar(select(func.count(Author.id))) == 2
        session.rollback()  # ...and are undone
        with pytest.raises(IntegrityError, match="authors_name_key"), session.begin():
            session.add(Author(name="kept"))
        assert session.scalars(select(Author.name)).all() == ["kept"]

    direct = create_engine(url(pg_server.dsn()))
    try:
        with direct.connect() as conn:
            names = conn.execute(text(f'SELECT name FROM "{schema}".authors')).scalars().all()
            books = conn.execute(text(f'SELECT count(*) FROM "{schema}".books')).scalar()
    finally:
        direct.dispose()
    assert names == ["kept"]
    assert books == 0


def describe(metadata: MetaData) -> dict[str, Any]:
    """Everything reflection found, as plain comparable data."""
    described: dict[str, Any] = {}
    for name, table in sorted(metadata.tables.items()):
        described[name] = {
            "columns": [(c.name, str(c.type), c.nullable, c.primary_key,
                         None if c.server_default is None else str(getattr(c.server_default,
                                                                            "arg", "")),
                         c.identity is not None and str(c.identity.start),
                         c.comment) for c in table.columns],
            "foreign_keys": sorted((fk.parent.name, fk.target_fullname, fk.ondelete or "")
                                   for fk in table.foreign_keys),
            "indexes": sorted((i.name or "", tuple(c.name for c in i.columns), i.unique)
                              for i in table.indexes),
            "constraints": sorted((type(c).__name__, c.name or "",
                                   tuple(sorted(col.name for col in getattr(c, "columns", []))))
                                  for c in table.constraints),
        }
    return described


def test_reflection_matches_direct(proxy: ProxyProcess, pg_server: ThrowawayPostgres) -> None:
    results = {}
    for where, dsn in (("proxy", proxy.dsn("copilot")), ("direct", pg_server.dsn())):
        engine = create_engine(url(dsn))
        try:
            metadata = MetaData()
            metadata.reflect(bind=engine, schema="public", only=[*SHOP_TABLES, *SHOP_VIEWS],
                             views=True)
            results[where] = describe(metadata)
        finally:
            engine.dispose()
    through_proxy = results["proxy"]
    assert set(through_proxy) == {f"public.{t}" for t in (*SHOP_TABLES, *SHOP_VIEWS)}
    customer_columns = [c[0] for c in through_proxy["public.customers"]["columns"]]
    assert customer_columns == ["id", "full_name", "email", "phone", "ssn", "birth_date",
                                "created_at"]
    assert ("customer_id", "public.customers.id", "") in (
        through_proxy["public.orders"]["foreign_keys"])
    assert through_proxy == results["direct"]
