"""The Alembic migrations build exactly the schema the models describe."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from im.db import Base, create_schema, include_in_schema_compare, make_engine


def _diff(engine) -> list:  # type: ignore[no-untyped-def]
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": False, "include_object": include_in_schema_compare}
        )
        return compare_metadata(context, Base.metadata)


def test_upgrade_on_an_empty_sqlite_database_matches_the_models(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    assert create_schema(engine) == "0011"
    assert _diff(engine) == []
    assert create_schema(engine) == "0011"  # idempotent


@pytest.mark.integration
def test_upgrade_on_mariadb_matches_the_models(mysql_url):
    engine = make_engine(mysql_url)
    create_schema(engine)
    assert _diff(engine) == []
    names = set(inspect(create_engine(mysql_url)).get_table_names())
    assert {
        "users",
        "conversations",
        "members",
        "messages",
        "dead_letters",
        "sessions",
        "group_invites",
        "member_settings",
    } <= names
    assert "alembic_version" in names
