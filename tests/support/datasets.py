"""Real tables that ship offline inside packages, served to mlcycle as a user would bring them.

Beside the loan simulator, the life-cycle tests run on public data with its own column names, types and
quirks (statsmodels' bundled datasets; no download):

* ``fair`` (binary): Fair's 1978 survey of 6,366 married women; ``had_affair`` is ``affairs > 0`` (the
  statsmodels example's own target). Its categories are numbers (``occupation`` 1..6, ``religious``
  1..4, ``rate_marriage`` 1..5) stored as floats, ``children`` has a ``5.5``. ``affairs`` itself is the
  target's source: a perfect leak, which the leakage guard must refuse when declared as a feature.
* ``anes96`` (multiclass): the 1996 American National Election Study, 944 respondents; ``PID``, the
  7-point party identification (0 strong Democrat .. 6 strong Republican), from left-right placements,
  age, education, income and the vote. ``logpopul`` is derived from ``popul``: an extra column.
* ``randhie`` (regression): the RAND Health Insurance Experiment, 20,190 person-years; ``mdvis``, the
  number of outpatient visits, from coinsurance, deductibles, income, health status and chronic disease.

None has a timestamp. A *stream* of daily batches is made by giving rows dates: in random order (no
drift: every day draws from the same population), or ordered by a real column (covariate drift: the later
days hold the higher values of that column, as a population that ages or gets richer would). Landing
exports carry columns the declaration does not name (an export id, a free-text note), as real ones do.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class RealTable:
    name: str  # the dataset's name in the declaration
    task: str  # binary | multiclass | regression
    frame: pd.DataFrame  # the real rows, target included, as the user has them
    target: str
    drift_column: str  # a real column whose distribution the drifted stream changes over dates
    leak: str | None = None  # a real column that leaks the target (never a feature of a sound model)
    categorical: list[str] = field(default_factory=list)  # numeric-coded columns that are categories

    @property
    def features(self) -> list[str]:
        return [c for c in self.frame.columns if c not in (self.target, self.leak)]


def fair() -> RealTable:
    import statsmodels.api as sm

    frame = sm.datasets.fair.load_pandas().data.copy()
    frame.insert(len(frame.columns), "had_affair", (frame["affairs"] > 0).astype("int64"))
    return RealTable(name="fair", task="binary", frame=frame, target="had_affair", drift_column="age",
                     leak="affairs", categorical=["occupation", "occupation_husb", "religious"])


def anes96() -> RealTable:
    import statsmodels.api as sm

    frame = sm.datasets.anes96.load_pandas().data.copy()
    frame["PID"] = frame["PID"].astype("int64")
    return RealTable(name="anes96", task="multiclass", frame=frame.drop(columns=["logpopul"]), target="PID",
                     drift_column="age")


def randhie() -> RealTable:
    import statsmodels.api as sm

    frame = sm.datasets.randhie.load_pandas().data.copy()
    return RealTable(name="randhie", task="regression", frame=frame, target="mdvis", drift_column="disea")


TABLES = {"fair": fair, "anes96": anes96, "randhie": randhie}


def daily_batches(table: RealTable, start: dt.date, days: int, *, drifted: bool, seed: int = 0,
                  columns: list[str] | None = None) -> list[tuple[dt.date, pd.DataFrame]]:
    """The table's rows spread over ``days`` dates from ``start`` (every row once, about equal days).

    ``drifted``: rows ordered by ``table.drift_column`` (ties broken at random), so later dates hold
    higher values; otherwise a random permutation, so every date draws from the same population.
    """
    rng = np.random.default_rng(seed)
    frame = table.frame[columns] if columns else table.frame
    order = rng.permutation(len(frame))
    if drifted:
        keys = frame[table.drift_column].to_numpy()[order]
        order = order[np.argsort(keys, kind="stable")]
    chunks = np.array_split(order, days)
    return [(start + dt.timedelta(days=i), frame.iloc[idx].reset_index(drop=True)) for i, idx in enumerate(chunks)]


def write_landing(folder: Path, batches: list[tuple[dt.date, pd.DataFrame]], *, extra_columns: bool = True,
                  fmt: str = "csv") -> list[Path]:
    """One export per date, ``<folder>/date=YYYY-MM-DD/export.<fmt>``, as a warehouse job would drop it.

    With ``extra_columns``, each export also carries an ``export_id`` and a free-text ``note`` column
    that no declaration names.
    """
    written = []
    for day, frame in batches:
        out = frame.copy()
        if extra_columns:
            out.insert(0, "export_id", [f"{day:%Y%m%d}-{i:05d}" for i in range(len(out))])
            out["note"] = np.where(np.arange(len(out)) % 7 == 0, "checked, see ticket", "")
        path = Path(folder) / f"date={day.isoformat()}" / f"export.{fmt}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "csv":
            out.to_csv(path, index=False)
        else:
            out.to_parquet(path, index=False)
        written.append(path)
    return written
