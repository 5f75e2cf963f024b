"""dbguard: a governance proxy for PostgreSQL and MySQL/MariaDB.

Every statement is framed, analysed, decided by policy and journaled before it reaches
the database. See docs/architecture.md for the path of one statement.
"""

__version__ = "0.1.0"
