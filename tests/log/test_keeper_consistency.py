"""The log keeper signs nothing it has not proven consistent with every checkpoint it
knows: the database's, and those in the checkpoint file, which another process (an
export from the command line, a second instance) may have written. On SQLite files, two
databases sharing one key and one checkpoint file stand for a log and its fork."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from panicbutton.log import checkpoints, spec
from server.db import make_engine, migrate, sessions
from server.log.append import audit
from server.log.keeper import LogFailedError, LogKeeper
from server.log.personal import Retention
from server.models import LogEntry

T0 = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
SIGNER = checkpoints.Signer.generate("panicbutton.test/log")


def database(path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    return engine


@pytest.fixture
def engines() -> Iterator[list[Engine]]:
    made: list[Engine] = []
    yield made
    for engine in made:
        engine.dispose()


def keeper(engine: Engine, folder: Path) -> LogKeeper:
    return LogKeeper(
        engine=engine,
        sessions=sessions(engine),
        signer=SIGNER,
        checkpoint_file=folder / "checkpoints.jsonl",
        clock=lambda: T0 + timedelta(hours=1),
        retention=Retention(),
    )


def beats(engine: Engine, count: int, *, start: datetime = T0) -> None:
    for i in range(count):
        with sessions(engine).begin() as s:
            audit(s, at=start + timedelta(seconds=i), type="log.heartbeat")


def checks(engine: Engine) -> list[str]:
    with sessions(engine)() as s:
        bodies = s.scalars(select(LogEntry.body).where(LogEntry.type == "log.verified"))
        return [json.loads(b)["data"]["result"] for b in bodies]


def file_sizes(folder: Path) -> list[int]:
    lines = (folder / "checkpoints.jsonl").read_text().splitlines()
    return [checkpoints.open_checkpoint(json.loads(line), SIGNER.verifier).size for line in lines]


def test_a_log_that_contradicts_the_checkpoint_file_is_not_signed_at_all(
    tmp_path: Path, engines: list[Engine]
) -> None:
    a = database(tmp_path / "a.sqlite3")
    b = database(tmp_path / "b.sqlite3")
    engines += [a, b]
    beats(a, 3)
    assert keeper(a, tmp_path).sign() is not None
    beats(b, 3, start=T0 + timedelta(minutes=7))  # another history of the same size

    forked = keeper(b, tmp_path)
    with pytest.raises(LogFailedError, match="are not what the signed checkpoint of size 3"):
        forked.sign()

    assert file_sizes(tmp_path) == [3]
    assert checks(b) == ["failed"]
    with pytest.raises(LogFailedError):  # and it stays refused, without a second record
        forked.sign()
    assert checks(b) == ["failed"]


def test_a_newer_checkpoint_of_another_history_in_the_file_stops_a_running_keeper(
    tmp_path: Path, engines: list[Engine]
) -> None:
    a = database(tmp_path / "a.sqlite3")
    engines.append(a)
    beats(a, 3)
    running = keeper(a, tmp_path)
    assert running.sign() is not None
    # A copy of the log goes on differently and is signed into the same file (by another
    # process holding the key).
    with (
        sqlite3.connect(tmp_path / "a.sqlite3") as live,
        sqlite3.connect(tmp_path / "b.sqlite3") as copy,
    ):
        live.backup(copy)
    b = make_engine(f"sqlite:///{tmp_path / 'b.sqlite3'}")
    engines.append(b)
    beats(b, 2, start=T0 + timedelta(minutes=7))
    assert keeper(b, tmp_path).sign() is not None
    assert file_sizes(tmp_path) == [3, 5]

    beats(a, 2, start=T0 + timedelta(minutes=9))
    with pytest.raises(LogFailedError, match="the signed checkpoint of size 5 is not the log"):
        running.sign()

    assert file_sizes(tmp_path) == [3, 5]
    assert checks(a) == ["failed"]


def test_two_checkpoints_of_one_size_in_the_file_stop_signing(
    tmp_path: Path, engines: list[Engine]
) -> None:
    a = database(tmp_path / "a.sqlite3")
    engines.append(a)
    beats(a, 3)
    other = SIGNER.sign_checkpoint(3, spec.leaf_hash(b"another root"))
    with (tmp_path / "checkpoints.jsonl").open("a") as f:
        f.write(json.dumps(other.note) + "\n")

    with pytest.raises(LogFailedError):
        keeper(a, tmp_path).sign()

    assert checks(a) == ["failed"]


def test_an_untouched_log_is_signed_after_each_append_and_checked_only_anew(
    tmp_path: Path, engines: list[Engine]
) -> None:
    a = database(tmp_path / "a.sqlite3")
    engines.append(a)
    k = keeper(a, tmp_path)
    beats(a, 2)
    assert k.sign() is not None
    beats(a, 3, start=T0 + timedelta(minutes=1))
    second = k.sign()
    assert second is not None
    assert second.size == 5
    assert k.sign() is None  # nothing new
    assert file_sizes(tmp_path) == [2, 5]
    assert checks(a) == []
