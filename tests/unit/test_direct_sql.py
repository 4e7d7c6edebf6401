"""inventory.direct's renumbering of pyformat placeholders for PostgreSQL's own."""

from __future__ import annotations

from sqlalchemy import bindparam, column, literal_column, select, table
from sqlalchemy.dialects import postgresql

from inventory.direct import _numbered, compiled


def test_a_name_keeps_its_number_and_a_literal_percent_is_unescaped() -> None:
    sql, names = _numbered(
        "SELECT %(a)s::VARCHAR, %(b)s WHERE x LIKE 'a%%' AND y = %(a)s AND z = %(c_1)s"
    )
    assert sql == "SELECT $1::VARCHAR, $2 WHERE x LIKE 'a%' AND y = $1 AND z = $3"
    assert names == ("a", "b", "c_1")


def test_a_compiled_statement_passes_its_parameters_in_their_numbers_order() -> None:
    t = table("t", column("x"), column("y"))
    statement = select(t.c.x, literal_column("'100%'").label("p")).where(
        t.c.y == bindparam("second"), t.c.x == bindparam("first"), t.c.y != bindparam("second")
    )
    c = compiled(statement, postgresql.psycopg.dialect())  # type: ignore[no-untyped-call]
    assert c.numbered and "%(" not in c.sql and "'100%'" in c.sql
    assert c.sql.count("$1") == 2 and "$2" in c.sql and "$3" not in c.sql
    assert c.parameters({"first": "f", "second": "s"}) == ("s", "f")
