"""The model of the weekly NYC yellow-taxi demand forecast (nyc_taxi_demand_forecast): features,
training, a seasonal-naive baseline, a rolling backtest that lives with the TLC's publication gap,
the publication gate, scoring, and where models and forecasts are stored.

Each issue date `i` (a Saturday morning, New York) forecasts the trips of the 7 New York days
i+1 .. i+7 (lead 1..7 days) from the weather as forecast at `i`.

- Training data: the days of taxi_daily_weather strictly before `i` that exist at `i`. The TLC
  publishes a month ~2 months late, so the newest actual is ~8 weeks old at issue time: the model
  forecasts 8-10 weeks past its last actual, and its backtest reproduces that gap (`backtest`).
- Training uses OBSERVED weather (taxi_daily_weather, the Open-Meteo archive); the forecast uses the
  weather FORECAST at `i` (a DataFrame of the 7 days' features, fetched elsewhere). The backtest
  uses observed weather for its forecast days too, so it is optimistic about weather; `score`,
  once the actuals arrive, measures the real error with forecast weather.
- Model: ridge regression (scikit-learn) on log(trips) - weekday one-hot, US/New York holidays
  (the `holidays` package) and the days next to them, annual harmonics, a linear trend in years
  since a FIXED origin, and the day's weather. Linear in log space: it extrapolates the trend
  8+ weeks ahead, which a tree model cannot (a tree predicts at most the last level it saw).
- Deterministic: inputs sorted by day, features depend on the day and its row only (the trend's
  origin is fixed, never the window's start), a closed-form solver with no randomness, pickle
  protocol 5 - the same inputs give byte-identical model bytes, model_version and forecasts.

Heavy imports (pandas, numpy, scikit-learn, holidays) happen inside the functions only: DAG
parsing imports this module cheaply. docs/demand-forecast.md explains the choices and numbers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import pickle
import platform
from datetime import date, timedelta

from airflow.sdk.exceptions import AirflowFailException

log = logging.getLogger(__name__)

TABLE = "taxi_demand_forecast"
ACCURACY_TABLE = "taxi_demand_forecast_accuracy"
HISTORY_TABLE = "taxi_daily_weather"
MODEL_BUCKET = "models"
MODEL_PREFIX = "nyc_taxi_demand/"
S3_CONN_ID = "aws_default"
WAREHOUSE_CONN_ID = "warehouse_db"

HORIZON_DAYS = 7  # the forecast covers issued_on + 1 .. issued_on + 7
WEATHER_COLUMNS = ["temperature_min", "temperature_mean", "temperature_max", "precipitation"]
# The trend counts years from this fixed day, never from the training window's start: a day's
# features are the same whichever window it falls in.
TREND_ORIGIN = date(2019, 1, 1)
# Trained on the newest TRAINING_WINDOW_DAYS known days: two years separate the annual cycle from
# the trend, and the level of 2020-2021 (COVID) leaves the window by 2023.
TRAINING_WINDOW_DAYS = 730
# A model needs a year of days: less cannot tell the annual cycle from the trend.
MIN_TRAINING_DAYS = 365
RIDGE_ALPHA = 1.0  # on standardised features; small: a light guard against collinear weather columns
BACKTEST_ORIGINS = 8  # weekly origins of the rolling backtest

# The gate (see `gate`). A candidate is published only when its backtest MAPE is
# - at most BASELINE_MARGIN x the seasonal-naive baseline's MAPE on the same days: at least 5 % better
#   than the forecast anyone gets for free, else the model adds nothing worth its machinery; and
# - at most PREVIOUS_TOLERANCE (absolute, MAPE as a fraction: 0.02 = 2 points) above the previous
#   published model's recorded backtest MAPE. Weekly retraining runs the same method on a window moved
#   by at most a month of new actuals; the recorded MAPE of the previous model was measured on backtest
#   weeks a month or more older, so the two differ by noise even when nothing regressed (on the synthetic
#   data of tests/unit/test_demand_forecast.py the backtest MAPE of consecutive monthly retrainings moves
#   by up to 0.7 points: 2.4 % to 3.5 % over six monthly issues). "Strictly better" would
#   refuse good models on noise; a 2-point tolerance still catches a broken model (a partial or bad
#   month of data, a weather unit fault), whose error jumps by far more. The previous model cannot be re-run on the
#   candidate's backtest weeks fairly: it trained on some of them.
BASELINE_MARGIN = 0.95
PREVIOUS_TOLERANCE = 0.02

FORECAST_LOCK_CLASS = 731_121  # pg_advisory_xact_lock(class, YYYYMMDD of the issue): one writer per issue


class ForecastGateFailed(AirflowFailException):
    """The candidate model's backtest error does not beat the baseline or the previous published
    model by the stated margins: nothing is published, the previous forecast stands."""


class NotEnoughHistory(AirflowFailException):
    """taxi_daily_weather holds too few days before the issue date to train or to backtest."""


class LeakedFutureRow(ValueError):
    """A training row on or after the issue date: the model would see the future it forecasts."""


# -- features ----------------------------------------------------------------------------------------

def _frame(rows):
    """rows (a DataFrame, or an iterable of mappings) as a DataFrame with `day` as datetime.date,
    sorted by day."""
    import pandas as pd  # noqa: PLC0415

    frame = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if "day" not in frame.columns:
        raise ValueError(f"rows need a `day` column, got {list(frame.columns)}")
    frame["day"] = [d if type(d) is date else pd.Timestamp(d).date() for d in frame["day"]]
    if frame["day"].duplicated().any():
        raise ValueError(f"duplicate days: {sorted(set(frame['day'][frame['day'].duplicated()]))[:5]}")
    return frame.sort_values("day", kind="stable").reset_index(drop=True)


def holiday_days(years) -> set[date]:
    """Public holidays of the United States with New York's (subdiv="NY": Lincoln's Birthday,
    Election Day, ...), including the weekdays they are observed on (the package's default,
    observed=True) - python-holidays' docs, https://holidays.readthedocs.io/en/latest/#quick-start
    and the US entity (holidays/countries/united_states.py)."""
    import holidays  # noqa: PLC0415

    return set(holidays.country_holidays("US", subdiv="NY", years=sorted(set(years))))


def feature_names() -> list[str]:
    return ([f"weekday_{n}" for n in range(7)]
            + ["holiday", "holiday_eve", "holiday_after", "year_sin", "year_cos", "half_year_sin", "half_year_cos",
               "trend_years"]
            + WEATHER_COLUMNS + ["precipitation_log1p"])


def features(days_frame):
    """One row per day (sorted by day, indexed 0..n-1) with the columns of `feature_names()`:
    weekday one-hot (Monday = 0), the holiday flag and the day before / after a holiday, two annual
    harmonics (the season), years since TREND_ORIGIN, and the day's weather with log1p(precipitation)
    (rain's effect saturates: 30 mm is not 30 x 1 mm). `days_frame` needs `day` and the weather
    columns; a missing weather value fails."""
    import numpy as np  # noqa: PLC0415
    import pandas as pd  # noqa: PLC0415

    frame = _frame(days_frame)
    missing = [c for c in WEATHER_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"weather columns missing: {missing}")
    weather = frame[WEATHER_COLUMNS].astype("float64")
    if weather.isna().any().any():
        bad = frame.loc[weather.isna().any(axis=1), "day"].tolist()
        raise ValueError(f"days without complete weather: {bad[:5]}")
    days = frame["day"].tolist()
    holiday = holiday_days({d.year for d in days} | {days[0].year - 1, days[-1].year + 1}) if days else set()
    one_day = timedelta(days=1)
    out = pd.DataFrame(index=frame.index)
    weekday = np.array([d.weekday() for d in days])
    for n in range(7):
        out[f"weekday_{n}"] = (weekday == n).astype("float64")
    out["holiday"] = [float(d in holiday) for d in days]
    out["holiday_eve"] = [float(d + one_day in holiday) for d in days]
    out["holiday_after"] = [float(d - one_day in holiday) for d in days]
    # Day of the year as an angle (365.25 days a turn): smooth across New Year, leap years included.
    angle = np.array([(d - date(d.year, 1, 1)).days / 365.25 * 2 * math.pi for d in days])
    out["year_sin"], out["year_cos"] = np.sin(angle), np.cos(angle)
    out["half_year_sin"], out["half_year_cos"] = np.sin(2 * angle), np.cos(2 * angle)
    out["trend_years"] = [(d - TREND_ORIGIN).days / 365.25 for d in days]
    for column in WEATHER_COLUMNS:
        out[column] = weather[column].to_numpy()
    out["precipitation_log1p"] = np.log1p(weather["precipitation"].clip(lower=0).to_numpy())
    out.insert(0, "day", days)
    return out


# -- training ----------------------------------------------------------------------------------------

def known_history(rows, issued_on: date):
    """The rows known at issue time: days strictly before `issued_on` (what history.sql selects),
    sorted by day."""
    frame = _frame(rows)
    return frame[frame["day"] < issued_on].reset_index(drop=True)


def training_rows(rows, issued_on: date):
    """The training rows, sorted by day - after checking that none is on or after `issued_on`
    (defence in depth behind history.sql's WHERE day < issued_on: raises LeakedFutureRow)."""
    frame = _frame(rows)
    future = frame[frame["day"] >= issued_on]
    if len(future):
        raise LeakedFutureRow(f"{len(future)} training row(s) on or after the issue date {issued_on}: "
                              f"{future['day'].head(5).tolist()} - a model must not see the days it forecasts")
    if "trips" not in frame.columns or frame["trips"].isna().any() or (frame["trips"] <= 0).any():
        raise ValueError("every training row needs trips > 0")
    return frame


def _window(frame, before: date):
    """The days of `frame` strictly before `before` within TRAINING_WINDOW_DAYS of the newest of them
    (the newest known day, not `before`: the publication gap does not shorten the window)."""
    known = frame[frame["day"] < before]
    if known.empty:
        return known
    start = known["day"].max() - timedelta(days=TRAINING_WINDOW_DAYS - 1)
    return known[known["day"] >= start]


def new_model():
    from sklearn.linear_model import Ridge  # noqa: PLC0415
    from sklearn.pipeline import Pipeline  # noqa: PLC0415
    from sklearn.preprocessing import StandardScaler  # noqa: PLC0415

    # solver="cholesky": closed form, no random state, no iteration count to converge.
    return Pipeline([("scale", StandardScaler()), ("ridge", Ridge(alpha=RIDGE_ALPHA, solver="cholesky"))])


def fit(frame):
    """The model fitted on `frame`'s rows (day, trips, weather), sorted by day. Features as a plain
    float64 array (no column names inside the pickle), target log(trips)."""
    import numpy as np  # noqa: PLC0415

    frame = _frame(frame)
    if len(frame) < MIN_TRAINING_DAYS:
        raise NotEnoughHistory(f"{len(frame)} days to train on ({frame['day'].min()}..{frame['day'].max()}), "
                               f"at least {MIN_TRAINING_DAYS} needed")
    x = features(frame)[feature_names()].to_numpy(dtype="float64")
    y = np.log(frame["trips"].to_numpy(dtype="float64"))
    return new_model().fit(x, y)


def predict(model, days_frame) -> list[float]:
    """Predicted trips per day of `days_frame` (sorted by day)."""
    import numpy as np  # noqa: PLC0415

    x = features(days_frame)[feature_names()].to_numpy(dtype="float64")
    return [float(v) for v in np.exp(model.predict(x))]


def model_bytes(model) -> bytes:
    return pickle.dumps(model, protocol=5)


def training_config(frame, issued_on: date) -> dict:
    """What defines a training, besides the model's own bytes: hashed into model_version."""
    return {"issued_on": issued_on.isoformat(), "first_day": frame["day"].min().isoformat(),
            "last_day": frame["day"].max().isoformat(), "rows": len(frame), "features": feature_names(),
            "trend_origin": TREND_ORIGIN.isoformat(), "training_window_days": TRAINING_WINDOW_DAYS,
            "model": f"Pipeline(StandardScaler, Ridge(alpha={RIDGE_ALPHA}, solver='cholesky')) on log(trips)"}


def model_version(issued_on: date, blob: bytes, config: dict) -> str:
    """`<issued_on>-<sha12>`: the first 12 hex digits of sha256(model bytes + the training config as
    sorted JSON) - the same inputs always give the same version."""
    digest = hashlib.sha256(blob + json.dumps(config, sort_keys=True).encode()).hexdigest()
    return f"{issued_on.isoformat()}-{digest[:12]}"


def train(rows, issued_on: date) -> dict:
    """Train the candidate of `issued_on` on the rows known then: {model, bytes, version, config,
    frame (the training rows)}. Rows on or after the issue date are dropped first (known_history)
    and the rest checked again (training_rows)."""
    frame = training_rows(known_history(rows, issued_on), issued_on)
    frame = _window(frame, issued_on).reset_index(drop=True)
    model = fit(frame)
    blob = model_bytes(model)
    config = training_config(frame, issued_on)
    return {"model": model, "bytes": blob, "version": model_version(issued_on, blob, config), "config": config,
            "frame": frame}


# -- forecast ----------------------------------------------------------------------------------------

def forecast_days(issued_on: date) -> list[date]:
    return [issued_on + timedelta(days=lead) for lead in range(1, HORIZON_DAYS + 1)]


def forecast(model, issued_on: date, weather_frame, version: str) -> list[dict]:
    """The 7 rows of taxi_demand_forecast for `issued_on`, from the weather forecast at issue time
    (`weather_frame`: `day` and WEATHER_COLUMNS for exactly the days issued_on+1 .. issued_on+7)."""
    frame = _frame(weather_frame)
    expected = forecast_days(issued_on)
    if frame["day"].tolist() != expected:
        raise ValueError(f"weather for {frame['day'].tolist()}, the forecast of {issued_on} needs "
                         f"{expected[0]}..{expected[-1]}")
    predicted = predict(model, frame)
    return [{"issued_on": issued_on, "day": day, "lead_days": (day - issued_on).days, "predicted_trips": trips,
             "model_version": version} for day, trips in zip(expected, predicted, strict=True)]


# -- baseline ----------------------------------------------------------------------------------------

def seasonal_naive(history, days) -> list[float]:
    """Seasonal-naive forecast of `days`: each day gets the trips of the same weekday in the latest
    COMPLETE Monday-Sunday (ISO) week of `history` (all 7 days present) - the week as a whole, so a
    forecast week copies one real week, not a mix of weeks. Holidays are not adjusted: that is the
    baseline's point."""
    frame = _frame(history)
    by_day = dict(zip(frame["day"], frame["trips"], strict=True))
    if not by_day:
        raise NotEnoughHistory("no history for the seasonal-naive baseline")
    monday = max(by_day) - timedelta(days=max(by_day).weekday())
    while monday >= min(by_day) - timedelta(days=6):
        week = [monday + timedelta(days=n) for n in range(7)]
        if all(day in by_day for day in week):
            return [float(by_day[week[day.weekday()]]) for day in days]
        monday -= timedelta(days=7)
    raise NotEnoughHistory(f"no complete Monday-Sunday week in {min(by_day)}..{max(by_day)}")


# -- backtest ----------------------------------------------------------------------------------------

def mape(actual, predicted) -> float:
    """Mean absolute percentage error, as a fraction (0.05 = 5 %)."""
    pairs = list(zip(actual, predicted, strict=True))
    return sum(abs(p - a) / a for a, p in pairs) / len(pairs)


def mae(actual, predicted) -> float:
    pairs = list(zip(actual, predicted, strict=True))
    return sum(abs(p - a) for a, p in pairs) / len(pairs)


def gap_days(history, issued_on: date) -> int:
    """Days between the newest actual known at issue time and the issue date, both excluded (the
    TLC's publication delay as it is at `issued_on`: ~60)."""
    last = _frame(history)["day"].max()
    return (issued_on - last).days - 1


def backtest_origins(history, issued_on: date, origins: int = BACKTEST_ORIGINS) -> list[date]:
    """The last `origins` weekly origins inside the known history, oldest first: days of the issue
    date's weekday whose 7 following days all have actuals."""
    frame = _frame(history)
    known = set(frame["day"])
    last = frame["day"].max()
    origin = last - timedelta(days=HORIZON_DAYS)
    origin -= timedelta(days=(origin.weekday() - issued_on.weekday()) % 7)
    found = []
    while len(found) < origins and origin >= frame["day"].min():
        if all(day in known for day in forecast_days(origin)):
            found.append(origin)
        origin -= timedelta(days=7)
    return sorted(found)


def backtest(history, issued_on: date, origins: int = BACKTEST_ORIGINS) -> dict:
    """Rolling backtest of the method as it would have run at each of the last `origins` weekly
    origins of the history known at `issued_on`, with the publication gap of `issued_on`: at origin
    o, train on the days before o - gap (gap = gap_days), forecast o+1 .. o+7 from those days'
    OBSERVED weather (better than the forecast weather a real issue has: the backtest is optimistic
    about weather - `score` measures the real error later), and the seasonal-naive baseline from the
    same training days. MAPE pooled over all forecast days, model and baseline on the same days."""
    frame = training_rows(known_history(history, issued_on), issued_on)
    gap = gap_days(frame, issued_on)
    runs, actual_all, model_all, baseline_all = [], [], [], []
    for origin in backtest_origins(frame, issued_on, origins):
        cutoff = origin - timedelta(days=gap)
        train_frame = _window(frame, cutoff)
        if len(train_frame) < MIN_TRAINING_DAYS:
            log.info("backtest origin %s skipped: %d days before %s", origin, len(train_frame), cutoff)
            continue
        target = frame[frame["day"].isin(forecast_days(origin))]
        model = fit(train_frame)
        predicted = predict(model, target)
        baseline = seasonal_naive(train_frame, target["day"].tolist())
        actual = target["trips"].astype("float64").tolist()
        runs.append({"origin": origin.isoformat(), "train_first_day": train_frame["day"].min().isoformat(),
                     "train_last_day": train_frame["day"].max().isoformat(), "cutoff": cutoff.isoformat(),
                     "mape": mape(actual, predicted), "baseline_mape": mape(actual, baseline)})
        actual_all += actual
        model_all += predicted
        baseline_all += baseline
    if not runs:
        raise NotEnoughHistory(f"no backtest origin before {issued_on} has {MIN_TRAINING_DAYS} days to train on "
                               f"with the {gap}-day publication gap (history {frame['day'].min()}.."
                               f"{frame['day'].max()})")
    return {"gap_days": gap, "origins": runs, "days": len(actual_all), "mape": mape(actual_all, model_all),
            "mae": mae(actual_all, model_all), "baseline_mape": mape(actual_all, baseline_all),
            "baseline_mae": mae(actual_all, baseline_all)}


# -- gate --------------------------------------------------------------------------------------------

def gate(candidate_mape: float, baseline_mape: float, previous_mape: float | None = None) -> None:
    """Pass (return None) when the candidate's backtest MAPE is <= BASELINE_MARGIN x the baseline's
    and <= the previous published model's + PREVIOUS_TOLERANCE (no previous model: that rule is
    skipped); else raise ForecastGateFailed naming the errors it compared."""
    failures = []
    if not candidate_mape <= BASELINE_MARGIN * baseline_mape:
        failures.append(f"candidate backtest MAPE {candidate_mape:.4f} does not beat the seasonal-naive baseline's "
                        f"{baseline_mape:.4f} by the margin (must be <= {BASELINE_MARGIN} x baseline = "
                        f"{BASELINE_MARGIN * baseline_mape:.4f})")
    if previous_mape is not None and not candidate_mape <= previous_mape + PREVIOUS_TOLERANCE:
        failures.append(f"candidate backtest MAPE {candidate_mape:.4f} is worse than the previous published "
                        f"model's {previous_mape:.4f} by more than {PREVIOUS_TOLERANCE} (must be <= "
                        f"{previous_mape + PREVIOUS_TOLERANCE:.4f})")
    if failures:
        raise ForecastGateFailed("model not published, the previous forecast stands: " + "; ".join(failures))


# -- model card --------------------------------------------------------------------------------------

def library_versions() -> dict:
    from importlib import metadata  # noqa: PLC0415

    return {"python": platform.python_version(),
            **{name: metadata.version(name) for name in ("scikit-learn", "numpy", "scipy", "pandas", "holidays")}}


def model_card(trained: dict, backtest_result: dict, issued_on: date) -> dict:
    """The model card (store as JSON with sort_keys): what it was trained on, how, with which
    libraries, and how it did in the backtest against the baseline; the gate's margins."""
    frame = trained["frame"]
    months: dict[str, int] = {}
    for day in frame["day"]:
        months[day.strftime("%Y-%m")] = months.get(day.strftime("%Y-%m"), 0) + 1
    return {
        "model_version": trained["version"],
        "issued_on": issued_on.isoformat(),
        "target": "log(trips) per New York day; prediction exp(model)",
        "model": trained["config"]["model"],
        "training_window": {"first_day": trained["config"]["first_day"], "last_day": trained["config"]["last_day"],
                            "rows": len(frame), "window_days": TRAINING_WINDOW_DAYS,
                            "source": f"{HISTORY_TABLE} (observed weather), days < issued_on"},
        "months_seen": months,  # YYYY-MM: days of that month in the training rows
        "features": feature_names(),
        "trend_origin": TREND_ORIGIN.isoformat(),
        "holidays": "holidays.country_holidays('US', subdiv='NY'), observed days included",
        "libraries": library_versions(),
        "backtest": {key: backtest_result[key] for key in ("gap_days", "days", "mape", "mae", "origins")},
        "baseline": {"method": "seasonal naive: same weekday of the latest complete Monday-Sunday week",
                     "mape": backtest_result["baseline_mape"], "mae": backtest_result["baseline_mae"]},
        "gate": {"baseline_margin": BASELINE_MARGIN, "previous_tolerance": PREVIOUS_TOLERANCE},
        "model_sha256": hashlib.sha256(trained["bytes"]).hexdigest(),
    }


def card_json(card: dict) -> str:
    return json.dumps(card, sort_keys=True, indent=2) + "\n"


# -- scoring -----------------------------------------------------------------------------------------

def score(forecast_rows, actual_rows, baseline_rows) -> dict:
    """MAE and MAPE of the forecast, and the baseline's MAPE, over the forecast days that have
    actuals: {days_scored, mae, mape, baseline_mape} (MAPE as a fraction; None when no day has an
    actual yet). Rows are mappings: forecast {day, predicted_trips}, actual {day, trips}, baseline
    {day, trips | predicted_trips}."""
    actual = {_day(r["day"]): float(r["trips"]) for r in actual_rows}
    baseline = {_day(r["day"]): float(r.get("predicted_trips", r.get("trips"))) for r in baseline_rows}
    scored = sorted((_day(r["day"]), float(r["predicted_trips"])) for r in forecast_rows if _day(r["day"]) in actual)
    missing = [day for day, _ in scored if day not in baseline]
    if missing:
        raise ValueError(f"no baseline for {missing}")
    if not scored:
        return {"days_scored": 0, "mae": None, "mape": None, "baseline_mape": None}
    truth = [actual[day] for day, _ in scored]
    return {"days_scored": len(scored), "mae": mae(truth, [p for _, p in scored]),
            "mape": mape(truth, [p for _, p in scored]),
            "baseline_mape": mape(truth, [baseline[day] for day, _ in scored])}


def _day(value) -> date:
    return value if type(value) is date else date.fromisoformat(str(value)[:10])


# -- storage -----------------------------------------------------------------------------------------

def model_key(version: str, name: str) -> str:
    return f"{MODEL_PREFIX}{version}/{name}"


def save_model(model_blob: bytes, card: dict, version: str, conn_id: str = S3_CONN_ID) -> str:
    """s3://models/nyc_taxi_demand/<version>/model.pkl, then model_card.json next to it (the card
    last: a card means its model is complete). Same version, same bytes: a re-run rewrites them
    identically. Returns the folder's URI."""
    from include.object_storage import write_object  # noqa: PLC0415

    write_object(model_blob, MODEL_BUCKET, model_key(version, "model.pkl"), conn_id)
    write_object(card_json(card), MODEL_BUCKET, model_key(version, "model_card.json"), conn_id)
    return f"s3://{MODEL_BUCKET}/{MODEL_PREFIX}{version}/"


def load_model(version: str, conn_id: str = S3_CONN_ID):
    """The pickled model of `version` (only ever one this project wrote: pickle runs code)."""
    from include.object_storage import naming_s3, s3_path  # noqa: PLC0415

    key = model_key(version, "model.pkl")
    path = s3_path(MODEL_BUCKET, key, conn_id)
    with naming_s3("reading", path, MODEL_BUCKET, key, conn_id):
        return pickle.loads(path.read_bytes())  # noqa: S301 - our own bucket's model


def _records(sql_file: str, params: dict, conn_id: str) -> list[tuple]:
    from airflow.providers.postgres.hooks.postgres import PostgresHook  # noqa: PLC0415

    from include.warehouse import apply_ddl, read_sql  # noqa: PLC0415

    conn = PostgresHook(postgres_conn_id=conn_id).get_conn()
    try:
        for table in (HISTORY_TABLE, TABLE, ACCURACY_TABLE):  # a first run may come before any of them
            apply_ddl(conn, table)
        with conn.cursor() as cur:
            cur.execute(read_sql(sql_file), params)
            rows = cur.fetchall()
        conn.commit()
    finally:
        conn.close()
    return rows


def load_history(issued_on: date, conn_id: str = WAREHOUSE_CONN_ID) -> list[dict]:
    """The taxi_daily_weather days known at issue time (day < issued_on), sorted by day."""
    columns = ["day", "trips", *WEATHER_COLUMNS]
    return [dict(zip(columns, row, strict=True))
            for row in _records(f"{TABLE}/history.sql", {"issued_on": issued_on}, conn_id)]


def latest_published_version(before: date, conn_id: str = WAREHOUSE_CONN_ID) -> str | None:
    """model_version of the newest forecast issued before `before` (the previous published model)."""
    rows = _records(f"{TABLE}/latest_published.sql", {"before": before}, conn_id)
    return rows[0][0] if rows else None


def latest_published_card(before: date, conn_id: str = WAREHOUSE_CONN_ID, s3_conn_id: str = S3_CONN_ID) -> dict | None:
    """The model card of the previous published model - the one whose forecast of the newest issue
    date before `before` is in taxi_demand_forecast - or None when nothing was published yet."""
    from include.object_storage import read_text  # noqa: PLC0415

    version = latest_published_version(before, conn_id)
    if version is None:
        return None
    return json.loads(read_text(MODEL_BUCKET, model_key(version, "model_card.json"), s3_conn_id))


def check_forecast_rows(issued_on: date, rows: list[dict]) -> None:
    """The 7 rows of one issue, before they are written: days issued_on+1..+7 with their lead,
    one model_version, finite positive predictions (the rows are computed in the same task, so the
    check runs here rather than on a staged table)."""
    days = sorted(_day(r["day"]) for r in rows)
    problems = []
    if days != forecast_days(issued_on):
        problems.append(f"days {days}, expected {forecast_days(issued_on)}")
    if any(_day(r["issued_on"]) != issued_on for r in rows):
        problems.append("rows of another issue date")
    if any(r["lead_days"] != (_day(r["day"]) - issued_on).days for r in rows):
        problems.append("lead_days is not day - issued_on")
    if len({r["model_version"] for r in rows}) != 1:
        problems.append(f"model versions {sorted({r['model_version'] for r in rows})}")
    if any(not (math.isfinite(r["predicted_trips"]) and r["predicted_trips"] > 0) for r in rows):
        problems.append("a prediction is not a finite positive number")
    if problems:
        raise AirflowFailException(f"forecast of {issued_on} not stored: {'; '.join(problems)}")


def store_forecast(issued_on: date, rows: list[dict], conn_id: str = WAREHOUSE_CONN_ID) -> int:
    """Replace the issue date's rows in taxi_demand_forecast with `rows` (7), in one transaction
    under an advisory lock per issue date: a re-run replaces its 7 rows, readers see the old or the
    new week, never a mix. Rows may carry `baseline_trips` (the seasonal-naive forecast as issued,
    which scoring compares against). Returns the rows written."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook  # noqa: PLC0415

    from include.warehouse import apply_ddl, read_sql, transaction  # noqa: PLC0415

    check_forecast_rows(issued_on, rows)
    conn = PostgresHook(postgres_conn_id=conn_id).get_conn()
    try:
        apply_ddl(conn, TABLE)
        with transaction(conn), conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s, %s)",
                        [FORECAST_LOCK_CLASS, int(issued_on.strftime("%Y%m%d"))])
            cur.execute(read_sql(f"{TABLE}/delete_issue.sql"), {"issued_on": issued_on})
            cur.executemany(read_sql(f"{TABLE}/insert_day.sql"),
                            [{"baseline_trips": None, **row, "issued_on": issued_on} for row in rows])
    finally:
        conn.close()
    log.info("%s: %d days of the forecast issued %s (model %s)", TABLE, len(rows), issued_on,
             rows[0]["model_version"])
    return len(rows)


def store_accuracy(issued_on: date, model_version: str, metrics: dict, conn_id: str = WAREHOUSE_CONN_ID) -> None:
    """Upsert the score of one issue date's forecast (`metrics` as `score` returns it) into
    taxi_demand_forecast_accuracy, keyed (issued_on, model_version): a later score with more days
    replaces the earlier one."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook  # noqa: PLC0415

    from include.warehouse import apply_ddl, read_sql, transaction  # noqa: PLC0415

    if not metrics.get("days_scored"):
        raise ValueError(f"nothing to store for {issued_on}: no forecast day has an actual yet")
    conn = PostgresHook(postgres_conn_id=conn_id).get_conn()
    try:
        apply_ddl(conn, ACCURACY_TABLE)
        with transaction(conn), conn.cursor() as cur:
            cur.execute(read_sql(f"{ACCURACY_TABLE}/upsert.sql"),
                        {"issued_on": issued_on, "model_version": model_version, "days_scored": metrics["days_scored"],
                         "mae": metrics["mae"], "mape": metrics["mape"], "baseline_mape": metrics["baseline_mape"],
                         "mape_observed_weather": metrics.get("mape_observed_weather")})
    finally:
        conn.close()


def stored_forecast(issued_on: date, conn_id: str = WAREHOUSE_CONN_ID) -> list[dict]:
    """The stored rows of one issue with the actual trips of their days where known (for `score`)."""
    columns = ["day", "lead_days", "predicted_trips", "baseline_trips", "model_version", "trips"]
    return [dict(zip(columns, row, strict=True))
            for row in _records(f"{TABLE}/issue_with_actuals.sql", {"issued_on": issued_on}, conn_id)]
