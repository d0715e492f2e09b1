"""im.db: a transaction the database rolled back as a deadlock victim runs again."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import OperationalError

from im.db import TRANSACTION_ATTEMPTS, is_retryable, retry_transaction


class _MysqlError(Exception):
    pass


class _PgError(Exception):
    sqlstate = "40P01"


def _deadlock() -> OperationalError:
    return OperationalError("INSERT ...", {}, _MysqlError(1213, "Deadlock found"))


def test_deadlocks_and_lock_timeouts_are_retryable_other_errors_are_not() -> None:
    assert is_retryable(_deadlock())
    assert is_retryable(OperationalError("x", {}, _MysqlError(1205, "Lock wait timeout")))
    assert is_retryable(OperationalError("x", {}, _PgError()))
    assert not is_retryable(OperationalError("x", {}, _MysqlError(2003, "Can't connect")))
    assert not is_retryable(ValueError("not a database error"))


def test_a_deadlock_victim_runs_again_until_it_commits() -> None:
    calls: list[int] = []

    @retry_transaction
    def login(user_id: int) -> str:
        calls.append(user_id)
        if len(calls) < 3:
            raise _deadlock()
        return f"session of {user_id}"

    assert login(7) == "session of 7"
    assert calls == [7, 7, 7]


def test_retries_end_and_other_errors_pass_at_once() -> None:
    calls: list[str] = []

    @retry_transaction
    def always_deadlocks() -> None:
        calls.append("deadlock")
        raise _deadlock()

    with pytest.raises(OperationalError):
        always_deadlocks()
    assert len(calls) == TRANSACTION_ATTEMPTS

    @retry_transaction
    def unreachable() -> None:
        calls.append("down")
        raise OperationalError("x", {}, _MysqlError(2003, "Can't connect"))

    with pytest.raises(OperationalError):
        unreachable()
    assert calls.count("down") == 1
