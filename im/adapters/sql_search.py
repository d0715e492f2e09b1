"""Message search for the SQL message store, on what migration 0008_search built:

- ``fts5`` (SQLite): the contentless FTS5 table ``message_search`` (rowid = msg_id).
  Every word is a quoted FTS5 string, so nothing the user typed is an FTS operator.
- ``fulltext`` (MySQL/MariaDB): the FULLTEXT index on the generated ``search_text``
  column, in BOOLEAN MODE with every word required (``+"word"``): natural-language
  mode would rank messages holding any one word, and the other backends demand all.
  InnoDB indexes no word shorter than ``innodb_ft_min_token_size`` (3) and no
  stopword: those words are looked up with LIKE in ``search_text`` instead (a
  substring, not a whole word, in the messages the other words found).
- ``like`` (SQLite without FTS5, other databases): LIKE over the body per word,
  ASCII case-insensitive, a substring match; a scan of the conversations in scope.

The words come from ``im.search.parse_query`` (letters and digits only) and travel as
bound parameters; they are still quoted and escaped here as if they were anything.

Given ``max_seconds``, MySQL and MariaDB stop a search themselves after that long
(MySQL: the ``MAX_EXECUTION_TIME`` optimizer hint; MariaDB, which ignores that hint:
``SET STATEMENT max_statement_time=N FOR SELECT ...``): the caller's timeout only
stops the waiting, and a scan left running would hold its thread and connection.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    Text,
    and_,
    cast,
    event,
    func,
    inspect,
    literal_column,
    or_,
    select,
)
from sqlalchemy import text as sql_text
from sqlalchemy.engine import Engine, ExecutionContext
from sqlalchemy.orm import Session

from im.db import SEARCH_COLUMN, MessageRow

FTS_TABLE = "message_search"
# InnoDB's default full-text stopwords (INNODB_FT_DEFAULT_STOPWORD): never indexed.
INNODB_STOPWORDS = frozenset(
    "a about an are as at be by com de en for from how i in is it la of on or that the "
    "this to was what when where who will with und www".split()
)


def fts5_query(terms: list[str]) -> str:
    """Every term a quoted FTS5 string (a '"' doubled inside): implicitly ANDed."""
    return " ".join('"' + t.replace('"', '""') + '"' for t in terms)


def boolean_query(terms: list[str]) -> str:
    """MySQL BOOLEAN MODE with every term required; quotes cannot be escaped there,
    so they are removed (words never hold one)."""
    return " ".join('+"' + t.replace('"', "") + '"' for t in terms)


def like_pattern(term: str) -> str:
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


# Execution option carrying a statement's time limit (seconds) to the MariaDB hook.
STATEMENT_SECONDS = "im_max_statement_seconds"


def _mariadb_statement_time(
    conn: Any,
    cursor: Any,
    statement: str,
    parameters: Any,
    context: ExecutionContext | None,
    executemany: bool,
) -> tuple[str, Any]:
    """``before_cursor_execute`` hook: a statement whose execution options carry a
    limit runs under MariaDB's per-statement ``max_statement_time``."""
    seconds = context.execution_options.get(STATEMENT_SECONDS) if context is not None else None
    if seconds:
        statement = f"SET STATEMENT max_statement_time={float(seconds):.3f} FOR {statement}"
    return statement, parameters


def scope_clause(scope: dict[str, int]) -> ColumnElement[bool]:
    """Messages of the conversations in scope, after each one's join point. Most
    join points are 0 (direct chats, groups one was in from the start): one IN."""
    from_start = [cid for cid, after in scope.items() if after <= 0]
    parts: list[ColumnElement[bool]] = []
    if from_start:
        parts.append(MessageRow.conversation_id.in_(from_start))
    parts.extend(
        and_(MessageRow.conversation_id == cid, MessageRow.seq > after)
        for cid, after in scope.items()
        if after > 0
    )
    return or_(*parts)


class SqlSearch:
    """Picks the strategy once (what the schema has), then answers searches."""

    def __init__(self, engine: Engine, max_seconds: float | None = None) -> None:
        self._engine = engine
        self._max_seconds = max_seconds
        self._strategy: str | None = None
        self._min_token = 3
        self._server = ""  # "mysql" or "mariadb": how a statement's time is limited

    def strategy(self) -> str:
        if self._strategy is None:
            self._strategy = self._detect()
        return self._strategy

    def _detect(self) -> str:
        inspector = inspect(self._engine)
        dialect = self._engine.dialect.name
        if dialect == "sqlite" and inspector.has_table(FTS_TABLE):
            return "fts5"
        if dialect in ("mysql", "mariadb"):
            self._limit_time_on(self._engine)
            columns = {c["name"] for c in inspector.get_columns("messages")}
            if SEARCH_COLUMN in columns:
                with self._engine.connect() as conn:
                    size = conn.execute(sql_text("SELECT @@innodb_ft_min_token_size")).scalar()
                self._min_token = int(size or 3)
                return "fulltext"
        return "like"

    def _limit_time_on(self, engine: Engine) -> None:
        """Learns which of MySQL and MariaDB this is, and prepares MariaDB's hook."""
        if self._max_seconds is None:
            return
        engine.connect().close()  # the dialect tells MariaDB apart once connected
        self._server = "mariadb" if getattr(engine.dialect, "is_mariadb", False) else "mysql"
        if self._server == "mariadb" and not event.contains(
            engine, "before_cursor_execute", _mariadb_statement_time
        ):
            event.listen(engine, "before_cursor_execute", _mariadb_statement_time, retval=True)

    def time_limited(self, stmt: Select[Any]) -> Select[Any]:
        """``stmt`` stopped by the server after max_seconds (MySQL, MariaDB)."""
        self.strategy()  # detects the server
        if self._max_seconds is None or not self._server:
            return stmt
        if self._server == "mysql":
            ms = max(1, round(self._max_seconds * 1000))
            return stmt.prefix_with(f"/*+ MAX_EXECUTION_TIME({ms}) */")
        return stmt.execution_options(**{STATEMENT_SECONDS: self._max_seconds})

    def _word_clauses(self, terms: list[str]) -> list[Any]:
        strategy = self.strategy()
        if strategy == "fts5":
            matching = sql_text(
                f"SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :fts_query"
            ).bindparams(fts_query=fts5_query(terms))
            return [MessageRow.msg_id.in_(matching)]
        if strategy == "fulltext":
            indexed = [t for t in terms if len(t) >= self._min_token and t not in INNODB_STOPWORDS]
            column = literal_column(SEARCH_COLUMN)
            clauses: list[Any] = [
                column.like(like_pattern(t), escape="\\") for t in terms if t not in indexed
            ]
            if indexed:
                clauses.insert(
                    0,
                    sql_text(
                        f"MATCH ({SEARCH_COLUMN}) AGAINST (:ft_query IN BOOLEAN MODE)"
                    ).bindparams(ft_query=boolean_query(indexed)),
                )
            return clauses
        body = func.lower(cast(MessageRow.body, Text))
        return [body.like(like_pattern(t), escape="\\") for t in terms]

    def search(
        self, scope: dict[str, int], terms: list[str], before_msg_id: int, limit: int
    ) -> list[MessageRow]:
        stmt = select(MessageRow).where(
            scope_clause(scope),
            MessageRow.content_type.startswith("text/"),
            *self._word_clauses(terms),
        )
        if before_msg_id > 0:
            stmt = stmt.where(MessageRow.msg_id < before_msg_id)
        recalled = getattr(MessageRow, "recalled", None)  # once the store keeps recalls
        if recalled is not None:
            stmt = stmt.where(recalled.is_not(True))
        stmt = self.time_limited(stmt.order_by(MessageRow.msg_id.desc()).limit(limit))
        with Session(self._engine) as session:
            return list(session.scalars(stmt))
