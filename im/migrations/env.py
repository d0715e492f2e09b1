"""Alembic environment: run programmatically by ``im.migrations.upgrade`` with a live
connection (no alembic.ini needed)."""

from alembic import context

from im.db import Base, include_in_schema_compare

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER much
    compare_type=True,
    include_object=include_in_schema_compare,
)
with context.begin_transaction():
    context.run_migrations()
