"""The studies' SQLite database (``<data_dir>/tuning/tuning.db``): studies and their trials.

Every write returns once committed, with ``synchronous=full`` by default: a Suggest or a Report
the server answered is on disk, even after kill -9 or a power cut. Studies are few and their
writes are one per trial, so durability costs nothing that matters here. ``load`` reads
everything back at start (the service keeps each study's trials in memory).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmopt.storage import Database, Migration, private_folder
from llmopt.tuning.types import StudySpec, Trial

MIGRATIONS: list[Migration] = [
    """
    CREATE TABLE studies (
        name TEXT PRIMARY KEY,
        spec TEXT NOT NULL,
        state TEXT NOT NULL,
        create_time REAL NOT NULL
    );
    CREATE TABLE trials (
        study TEXT NOT NULL REFERENCES studies (name) ON DELETE CASCADE,
        number INTEGER NOT NULL,
        state TEXT NOT NULL,
        params TEXT NOT NULL,
        value REAL,
        metrics TEXT NOT NULL,
        feasible INTEGER NOT NULL,
        arm_id TEXT NOT NULL,
        create_time REAL NOT NULL,
        finish_time REAL,
        failure TEXT NOT NULL,
        request_id TEXT NOT NULL,
        PRIMARY KEY (study, number)
    );
    """,
]

_TRIAL_COLUMNS = (
    "study, number, state, params, value, metrics, feasible, arm_id, create_time, finish_time,"
    " failure, request_id"
)


def _trial_row(t: Trial) -> tuple[Any, ...]:
    return (
        t.study,
        t.number,
        t.state,
        json.dumps(t.params),
        t.value,
        json.dumps(t.metrics),
        int(t.feasible),
        t.arm_id,
        t.create_time,
        t.finish_time,
        t.failure,
        t.request_id,
    )


def _trial_of(row: Sequence[Any]) -> Trial:
    (
        study,
        number,
        state,
        params,
        value,
        metrics,
        feasible,
        arm_id,
        created,
        finished,
        failure,
        rid,
    ) = row
    return Trial(
        study=study,
        number=number,
        state=state,
        params=json.loads(params),
        create_time=created,
        value=value,
        metrics=json.loads(metrics),
        feasible=bool(feasible),
        arm_id=arm_id,
        finish_time=finished,
        failure=failure,
        request_id=rid,
    )


class TuningStore:
    """Durable studies and trials under ``folder`` (``tuning.db``; the folder is created 0700)."""

    def __init__(self, folder: Path, *, synchronous: str = "full") -> None:
        self.path = private_folder(Path(folder)) / "tuning.db"
        self._db = Database(self.path, migrations=MIGRATIONS, synchronous=synchronous)

    def create_study(self, spec: StudySpec, state: str, create_time: float) -> None:
        row = (spec.name, json.dumps(spec.to_json()), state, create_time)
        self._db.write(lambda c: c.execute("INSERT INTO studies VALUES (?, ?, ?, ?)", row))

    def delete_study(self, name: str) -> None:
        self._db.write(lambda c: c.execute("DELETE FROM studies WHERE name = ?", (name,)))

    def save_trials(
        self, study: str, trials: Sequence[Trial], study_state: str | None = None
    ) -> None:
        """Insert or replace ``study``'s ``trials`` (and set its state) in one transaction."""
        rows = [_trial_row(t) for t in trials]
        insert = f"INSERT OR REPLACE INTO trials ({_TRIAL_COLUMNS}) VALUES ({', '.join('?' * 12)})"

        def write(c: sqlite3.Connection) -> None:
            c.executemany(insert, rows)
            if study_state is not None:
                c.execute("UPDATE studies SET state = ? WHERE name = ?", (study_state, study))

        self._db.write(write)

    def load(self) -> list[tuple[StudySpec, str, float, list[Trial]]]:
        """Every study (spec, state, create time) with its trials by number."""

        def read(c: sqlite3.Connection) -> tuple[list[Any], list[Any]]:
            studies = c.execute("SELECT name, spec, state, create_time FROM studies").fetchall()
            trials = c.execute(
                f"SELECT {_TRIAL_COLUMNS} FROM trials ORDER BY study, number"
            ).fetchall()
            return studies, trials

        studies, trial_rows = self._db.read(read)
        by_study: dict[str, list[Trial]] = {}
        for row in trial_rows:
            by_study.setdefault(row[0], []).append(_trial_of(row))
        return [
            (StudySpec.from_json(json.loads(spec)), state, created, by_study.get(name, []))
            for name, spec, state, created in studies
        ]

    def close(self) -> None:
        self._db.close()
