"""Message search: a full-text index over the bodies of text messages, kept in step
with every insert, update and delete of ``messages`` by the database itself (so an
update that erases a body, as a recall does, takes the message out of the index).

- SQLite: an FTS5 table ``message_search`` (contentless: the text stays in
  ``messages``; rowid = msg_id), filled by triggers, and backfilled here. A SQLite
  built without FTS5 gets no table; the store then searches with LIKE.
- MySQL/MariaDB: a stored generated column ``search_text`` (the body as utf8mb4 text
  for text/* content types with a well-formed UTF-8 body, else NULL) with a FULLTEXT
  index; the database recomputes it on every write, and adding it fills it for the
  rows already there.
- Other databases: nothing (the store searches with LIKE).

Revision ID: 0008
Revises: 0007
"""

import logging

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

log = logging.getLogger("im.db")

FTS_TABLE = "message_search"
FULLTEXT_INDEX = "ft_messages_search"

# Indexed: content types starting with "text/" (case-sensitive, as im.search.searchable).
_SQLITE_TEXT = "substr({row}.content_type, 1, 5) = 'text/'"
_SQLITE_ADD = (
    f"INSERT INTO {FTS_TABLE}(rowid, body) SELECT new.msg_id, CAST(new.body AS TEXT) "
    f"WHERE {_SQLITE_TEXT.format(row='new')};"
)
# A contentless FTS5 table forgets a row only when told exactly what it indexed.
_SQLITE_REMOVE = (
    f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, body) "
    f"SELECT 'delete', old.msg_id, CAST(old.body AS TEXT) WHERE {_SQLITE_TEXT.format(row='old')};"
)
_SQLITE_TRIGGERS = {
    "message_search_insert": f"AFTER INSERT ON messages BEGIN {_SQLITE_ADD} END",
    "message_search_delete": f"AFTER DELETE ON messages BEGIN {_SQLITE_REMOVE} END",
    # One trigger, old out before new in: two triggers would run in an unspecified order.
    "message_search_update": (
        "AFTER UPDATE OF msg_id, content_type, body ON messages "
        f"BEGIN {_SQLITE_REMOVE} {_SQLITE_ADD} END"
    ),
}

# Well-formed UTF-8, byte by byte (possessive: no backtracking over a long body). A
# body that is not is left out of the index: converting it would fail the INSERT of
# the message itself in strict mode ("Invalid utf8mb4 character string").
_UTF8 = (
    r"^(?:[\x00-\x7F]|[\xC2-\xDF][\x80-\xBF]|\xE0[\xA0-\xBF][\x80-\xBF]"
    r"|[\xE1-\xEC\xEE\xEF][\x80-\xBF]{2}|\xED[\x80-\x9F][\x80-\xBF]"
    r"|\xF0[\x90-\xBF][\x80-\xBF]{2}|[\xF1-\xF3][\x80-\xBF]{3}"
    r"|\xF4[\x80-\x8F][\x80-\xBF]{2})*+$"
)
_UTF8_LITERAL = _UTF8.replace("\\", "\\\\")  # backslashes doubled in a SQL string literal
_MYSQL_COLUMN = (
    "ALTER TABLE messages ADD COLUMN search_text LONGTEXT CHARACTER SET utf8mb4 "
    "COLLATE utf8mb4_unicode_ci GENERATED ALWAYS AS "
    f"(IF(content_type LIKE BINARY 'text/%' AND body REGEXP '{_UTF8_LITERAL}', "
    "CONVERT(body USING utf8mb4), NULL)) STORED"
)


def _sqlite_upgrade() -> None:
    try:
        op.execute(
            f"CREATE VIRTUAL TABLE {FTS_TABLE} USING fts5("
            "body, content='', tokenize='unicode61 remove_diacritics 2')"
        )
    except sa.exc.OperationalError as exc:  # "no such module: fts5"
        log.warning("SQLite without FTS5 (%s): message search scans with LIKE", exc.orig)
        return
    for name, body in _SQLITE_TRIGGERS.items():
        op.execute(f"CREATE TRIGGER {name} {body}")
    op.execute(
        f"INSERT INTO {FTS_TABLE}(rowid, body) SELECT msg_id, CAST(body AS TEXT) "
        f"FROM messages WHERE {_SQLITE_TEXT.format(row='messages')}"
    )


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        _sqlite_upgrade()
    elif dialect in ("mysql", "mariadb"):
        op.execute(_MYSQL_COLUMN)
        op.execute(f"CREATE FULLTEXT INDEX {FULLTEXT_INDEX} ON messages (search_text)")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for name in _SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute(f"DROP TABLE IF EXISTS {FTS_TABLE}")
    elif dialect in ("mysql", "mariadb"):
        op.execute(f"DROP INDEX {FULLTEXT_INDEX} ON messages")
        op.execute("ALTER TABLE messages DROP COLUMN search_text")
