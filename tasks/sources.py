"""Where daily batches come from: the loan-application simulator and a landing zone.

A source turns a logical date into a :class:`Batch` (a DataFrame plus a description of where it came
from, recorded in the partition manifest). Sources do no validation: a batch that is structurally
readable is ingested as it arrived and Great Expectations decides whether it is fit for training.
What a source *does* refuse, with :class:`SourceError` naming the file, is what cannot be read at all:
no data for the date, an empty file, a truncated or corrupted Parquet/CSV file.

**simulator** -- a loan-default stream. Applicants have income, age, debt ratio, credit score, loan
amount, years employed, employment type, region and purpose; the default label is drawn from a
logistic model with non-linear terms and interactions (the debt-to-income burden, a U-shaped age
effect, self-employment amplifying debt). The batch for a date is a pure function of (seed, date), so
re-ingesting a date reproduces it bit for bit. ``simulator.drift`` events change the process from a
date on (covariate shift, concept drift, missing values, an unseen category) for the monitor to find.
The column names are the simulator's own; the shipped ``mlcycle.yaml`` declares exactly them.

**landing** -- CSV or Parquet files dropped under a prefix (a local folder or ``s3://bucket/prefix``),
one file, or one folder of files, per date with ``date=YYYY-MM-DD`` in its name. The files used are
named with their sha256 in the manifest, so a date already ingested from the same files is a no-op.
"""

from __future__ import annotations

import datetime as dt
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mlcycle.tasks.settings import DatasetSpec, DriftEvent, SimulatorSettings
from mlcycle.tasks.storage import ObjectStore, sha256_bytes


class SourceError(ValueError):
    """A batch that cannot be read at all; the message names the file or date."""


@dataclass(frozen=True)
class SourceFile:
    name: str
    sha256: str
    bytes: int


@dataclass
class Batch:
    frame: pd.DataFrame
    kind: str
    files: list[SourceFile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def parse_date(value: str | dt.date) -> dt.date:
    """Parse a YYYY-MM-DD logical date, with an error that says what was expected."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(value)):
            raise ValueError
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise SourceError(f"invalid date {value!r}: expected a calendar date as YYYY-MM-DD") from None


def date_range(start: dt.date, end: dt.date) -> list[dt.date]:
    if end < start:
        raise SourceError(f"backfill end {end} is before start {start}")
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


# --------------------------------------------------------------------------------------------------
# Simulator
# --------------------------------------------------------------------------------------------------

_EMPLOYMENT = ["salaried", "self_employed", "contractor", "unemployed", "retired"]
_REGIONS = ["north", "south", "east", "west", "central"]
_PURPOSES = ["home", "car", "education", "business", "personal"]


def _active(events: list[DriftEvent], day: dt.date) -> list[DriftEvent]:
    return [e for e in events if day >= e.start]


def simulate_batch(
    day: dt.date, settings: SimulatorSettings, spec: DatasetSpec, rows: int | None = None
) -> Batch:
    """The deterministic batch for ``day``: same (seed, date, rows) gives the same frame."""
    n = int(rows if rows is not None else settings.rows_per_day)
    rng = np.random.default_rng([settings.seed, day.toordinal(), n])
    drift = _active(settings.drift, day)

    age = np.clip(np.rint(rng.normal(42, 12, n)), 18, 90).astype("int64")
    emp_p = np.array([0.58, 0.15, 0.12, 0.07, 0.08])
    employment = rng.choice(len(_EMPLOYMENT), size=n, p=emp_p)
    employment = np.where((age >= 63) & (rng.random(n) < 0.7), 4, employment)  # mostly retired
    employment = np.where((age < 55) & (employment == 4), 0, employment)
    income = np.exp(rng.normal(np.log(46_000), 0.55, n))
    income = income * np.select([employment == 3, employment == 4, employment == 1], [0.35, 0.7, 1.15], 1.0)
    credit = np.clip(rng.normal(640, 60, n) + 28 * (np.log(income) - np.log(46_000)) + 0.9 * (age - 42),
                     300, 850)
    debt = np.clip(rng.beta(2.0, 5.0, n) * 1.4 + 0.25 * (employment == 3), 0, 10)
    purpose = rng.choice(len(_PURPOSES), size=n, p=[0.18, 0.26, 0.11, 0.12, 0.33])
    base_amount = np.select([purpose == 0, purpose == 3, purpose == 1], [9.8, 9.9, 9.4], 8.9)
    loan = np.clip(np.exp(rng.normal(base_amount, 0.7, n)), 500, 500_000)
    years = np.minimum(age - 18, rng.exponential(7.0, n))
    region = rng.choice(len(_REGIONS), size=n, p=[0.22, 0.20, 0.20, 0.20, 0.18])

    frame = pd.DataFrame({
        "income": np.round(income, 2),
        "age": age,
        "debt_ratio": np.round(debt, 4),
        "credit_score": np.round(credit, 1),
        "loan_amount": np.round(loan, 2),
        "employment_years": np.round(years, 1),
        "employment_type": pd.Categorical.from_codes(employment, _EMPLOYMENT).astype(str),
        "region": pd.Categorical.from_codes(region, _REGIONS).astype(str),
        "loan_purpose": pd.Categorical.from_codes(purpose, _PURPOSES).astype(str),
    })
    # Natural missingness: undeclared incomes and unknown tenure (always unknown for the unemployed).
    frame.loc[rng.random(n) < 0.02, "income"] = np.nan
    frame.loc[(employment == 3) | (rng.random(n) < 0.03), "employment_years"] = np.nan

    notes = []
    for event in drift:
        notes.append(_apply_covariate_drift(frame, event, rng, spec))

    # The label: logistic in per-feature contributions, so concept drift can rescale one of them.
    logit_terms = _label_terms(frame)
    scale = {name: 1.0 for name in logit_terms}
    for event in drift:
        if event.kind == "concept":
            scale[event.feature] = event.amount
            notes.append(f"concept: effect of {event.feature} x{event.amount}")
    logit = -1.95 + sum(scale[name] * term for name, term in logit_terms.items())
    label = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype("int64")

    seconds = np.sort(rng.integers(0, 86_400, n))
    start = pd.Timestamp(day, tz="UTC")
    ids = pd.Series(np.arange(n)).astype(str).str.zfill(7)
    frame.insert(0, spec.timestamp_column, start + pd.to_timedelta(seconds, unit="s"))
    frame.insert(0, spec.id_column, f"{day:%Y%m%d}-" + ids)
    frame[spec.target] = label
    return Batch(frame=frame, kind="simulator", notes=[n for n in notes if n])


def _label_terms(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each feature's contribution to the default log-odds (nulls contribute their own risk)."""
    income = frame["income"].to_numpy(dtype=float)
    log_income = np.where(np.isnan(income), np.log(30_000), np.log(np.maximum(income, 1.0)))
    burden = frame["loan_amount"].to_numpy(dtype=float) / np.exp(log_income)
    emp = frame["employment_type"].to_numpy()
    debt = frame["debt_ratio"].to_numpy(dtype=float)
    self_employed = emp == "self_employed"
    age = frame["age"].to_numpy(dtype=float)
    years = frame["employment_years"].to_numpy(dtype=float)
    return {
        "debt_ratio": 2.6 * (debt - 0.42) + 1.2 * self_employed * debt,
        "credit_score": -0.014 * (frame["credit_score"].to_numpy(dtype=float) - 650),
        "income": -0.55 * (log_income - np.log(46_000)) + 0.3 * np.isnan(income),
        "loan_amount": 1.1 * np.tanh(2.0 * burden) - 0.4,
        "age": 0.0012 * (age - 45) ** 2 - 0.25,
        "employment_years": np.where(np.isnan(years), 0.2, -0.04 * np.minimum(years, 15)),
        "employment_type": np.select([emp == "unemployed", emp == "contractor", self_employed], [1.0, 0.3, 0.2],
                                     0.0),
        "region": np.where(frame["region"].to_numpy() == "south", 0.3, 0.0),
        "loan_purpose": np.where(frame["loan_purpose"].to_numpy() == "business", 0.35, 0.0),
    }


def _apply_covariate_drift(frame: pd.DataFrame, event: DriftEvent, rng: np.random.Generator,
                           spec: DatasetSpec) -> str:
    col = event.feature
    if event.kind == "shift":
        feature = spec.feature(col)
        if feature.kind == "numeric":
            values = frame[col].to_numpy(dtype=float)
            shifted = values + event.amount * np.nanstd(values)
            lo = -np.inf if feature.min is None else feature.min
            hi = np.inf if feature.max is None else feature.max
            shifted = np.clip(shifted, lo, hi)
            frame[col] = np.rint(shifted).astype("int64") if feature.dtype == "int" else np.round(shifted, 4)
            return f"shift: {col} +{event.amount} sd"
        target = event.category or (feature.categories or [""])[0]
        move = rng.random(len(frame)) < event.amount
        frame.loc[move, col] = target
        return f"shift: {event.amount:.0%} of {col} moved to {target!r}"
    if event.kind == "missing":
        frame.loc[rng.random(len(frame)) < event.amount, col] = None
        return f"missing: {event.amount:.0%} of {col} nulled"
    if event.kind == "new_category":
        frame.loc[rng.random(len(frame)) < event.amount, col] = event.category
        return f"new_category: {event.amount:.0%} of {col} = {event.category!r}"
    return ""


# --------------------------------------------------------------------------------------------------
# Landing zone
# --------------------------------------------------------------------------------------------------


class LandingZone:
    """Files for each date under a local folder or an object-store prefix."""

    def __init__(self, location: str, store: ObjectStore | None = None) -> None:
        """``location`` is a local folder; when ``store`` is given it is a key prefix in that store."""
        self.location = location
        self.store = store

    def _names(self) -> list[str]:
        if self.store is not None:
            prefix = self.location.strip("/")
            return [k[len(prefix) + 1:] if prefix else k for k in self.store.list(prefix + "/" if prefix else "")]
        root = Path(self.location)
        if not root.is_dir():
            raise SourceError(f"landing path {self.location!r} is not a folder")
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())

    def _read(self, name: str) -> bytes:
        if self.store is not None:
            prefix = self.location.strip("/")
            return self.store.get_bytes(f"{prefix}/{name}" if prefix else name)
        root = Path(self.location).resolve()
        path = (root / name).resolve()
        if not path.is_relative_to(root):  # a symbolic link out of the landing folder: not landing data
            raise SourceError(f"landing file {name!r} resolves to {str(path)!r}, outside the landing path "
                              f"{self.location!r}; refusing to read it")
        return path.read_bytes()

    def files_for(self, day: dt.date) -> list[str]:
        tag = f"date={day.isoformat()}"
        return [
            name for name in self._names()
            if tag in name and name.lower().endswith((".csv", ".parquet", ".pq"))
            and not Path(name).name.startswith((".", "_"))
        ]

    def fetch(self, day: dt.date, spec: DatasetSpec) -> Batch:
        names = self.files_for(day)
        if not names:
            raise SourceError(
                f"no data for {day}: no CSV or Parquet file with 'date={day}' in its name under landing path "
                f"{self.location!r}"
            )
        frames, files = [], []
        for name in names:
            data = self._read(name)
            files.append(SourceFile(name=name, sha256=sha256_bytes(data), bytes=len(data)))
            frames.append(read_landing_file(name, data, spec))
        frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        return Batch(frame=frame, kind="landing", files=files)


def read_landing_file(name: str, data: bytes, spec: DatasetSpec) -> pd.DataFrame:
    """Parse one landing file; refuse empty, truncated or corrupted files naming the file."""
    if not data:
        raise SourceError(f"landing file {name!r} is empty (0 bytes)")
    if name.lower().endswith(".csv"):
        frame = _read_csv(name, data, spec)
    else:
        frame = _read_parquet(name, data)
    if frame.empty:
        raise SourceError(f"landing file {name!r} has no rows (columns: {list(frame.columns)})")
    return frame


def _read_csv(name: str, data: bytes, spec: DatasetSpec) -> pd.DataFrame:
    categorical = {f.name: "str" for f in spec.categorical_features}
    try:
        frame = pd.read_csv(io.BytesIO(data), dtype={spec.id_column: "str", **categorical})
    except pd.errors.EmptyDataError:
        raise SourceError(f"landing file {name!r} is empty (no header)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise SourceError(f"landing file {name!r} is not valid CSV: {str(exc).splitlines()[0]}") from None
    if spec.timestamp_column in frame.columns:
        parsed = pd.to_datetime(frame[spec.timestamp_column], errors="coerce", utc=True, format="ISO8601")
        # Keep unparseable timestamps as they came, so validation names the column instead of hiding it.
        if parsed.notna().sum() == frame[spec.timestamp_column].notna().sum():
            frame[spec.timestamp_column] = parsed
    return frame


def _read_parquet(name: str, data: bytes) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(io.BytesIO(data)).to_pandas()
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
        raise SourceError(f"landing file {name!r} is truncated or not valid Parquet: {exc}") from None


def landing_zone(location: str, store_for_bucket) -> LandingZone:
    """A LandingZone for a local folder or ``s3://bucket/prefix`` (``store_for_bucket(bucket)``)."""
    if location.startswith("s3://"):
        bucket, _, prefix = location[len("s3://"):].partition("/")
        return LandingZone(prefix, store=store_for_bucket(bucket))
    return LandingZone(location)
