"""Rewriting view SQL when a database is attached under another name."""

from __future__ import annotations

import sqlglot
from sqlglot import exp

from catalog.exceptions import InvalidInputError


def rename_database_in_sql(sql: str, old_db: str, new_db: str) -> str:
    """Make references to ``old_db.<table>`` in ``sql`` point at ``new_db.<table>``.

    Parses with the Hive dialect (the HMS view text is HiveQL/Spark SQL) and writes the same
    dialect back; unqualified references are left alone (they resolve in the view's own
    database, which is the renamed one).
    """
    if old_db == new_db or not sql:
        return sql
    try:
        tree = sqlglot.parse_one(sql, read="hive")
    except sqlglot.errors.ParseError as e:
        raise InvalidInputError(f"cannot parse view SQL to rename '{old_db}': {e}") from e
    changed = False
    for table in tree.find_all(exp.Table):
        if table.args.get("catalog") is None and table.db and table.db.lower() == old_db.lower():
            table.set("db", exp.to_identifier(new_db, quoted=True))
            changed = True
    return tree.sql(dialect="hive") if changed else sql
