"""The model of the weekly NYC yellow-taxi demand forecast (nyc_taxi_demand_forecast): features,
training, the seasonal-naive baseline and the rolling backtest. No Airflow, no pandas: this module
runs in the model process (`python -m include.demand_model`, started by include/demand_forecast.py
with the interpreter of `.venv-model`: numpy, scikit-learn, holidays - requirements-model.txt) and,
for tests and tools, in the project's own interpreter.

Each issue date `i` (a Saturday morning, New York) forecasts the trips of the 7 New York days
i+1 .. i+7 (lead 1..7 days) from the weather as forecast at `i`.

- Training data: the days of taxi_daily_weather strictly before `i` that exist at `i`. The TLC
  publishes a month ~2 months late, so the newest actual is ~8 weeks old at issue time: the model
  forecasts 8-10 weeks past its last actual, and its backtest reproduces that gap (`backtest`).
- Training uses OBSERVED weather (taxi_daily_weather, the Open-Meteo archive); the forecast uses the
  weather FORECAST at `i` (the 7 days' rows, fetched elsewhere). The backtest uses observed weather
  for its forecast days too, so it is optimistic about weather; scoring, once the actuals arrive,
  measures the real error with forecast weather.
- Model: ridge regression (scikit-learn) on log(trips) - weekday one-hot, US/New York holidays
  (the `holidays` package) and the days next to them, annual harmonics, a linear trend in years
  since a FIXED origin, and the day's weather. Linear in log space: it extrapolates the trend
  8+ weeks ahead, which a tree model cannot (a tree predicts at most the last level it saw).
- Deterministic: inputs sorted by day, features depend on the day and its row only (the trend's
  origin is fixed, never the window's start), a closed-form solver with no randomness, one BLAS
  thread (the model process's environment), pickle protocol 5 - the same inputs give byte-identical
  model bytes, model_version and forecasts.

Rows are mappings with a `day` (a date or an ISO string), `trips` where known and WEATHER_COLUMNS.
Heavy imports (numpy, scikit-learn, holidays) happen inside the functions only: DAG parsing and the
Airflow task process import this module cheaply. docs/demand-forecast.md explains the choices.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import pickle
import platform
import sys
from datetime import date, timedelta

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
# What is trained, sent to the model process with every request and hashed into model_version.
# "mean" (scikit-learn's DummyRegressor: the training mean of log trips) is no forecast anyone would
# publish: it exists so that the gate can be drilled end to end (tests/e2e) - the gate must refuse it.
MODEL_SPEC = {"estimator": "ridge", "alpha": RIDGE_ALPHA, "solver": "cholesky"}
# The libraries the model bytes depend on (the model card lists their versions).
LIBRARIES = ("scikit-learn", "numpy", "scipy", "holidays")


class NotEnoughHistory(Exception):  # noqa: N818 - the name says what is missing
    """taxi_daily_weather holds too few days before the issue date to train or to backtest."""


class LeakedFutureRow(ValueError):
    """A training row on or after the issue date: the model would see the future it forecasts."""


# -- rows --------------------------------------------------------------------------------------------

def as_date(value) -> date:
    """A date, or an ISO date/datetime string, as datetime.date."""
    return value if type(value) is date else date.fromisoformat(str(value)[:10])


def _rows(rows) -> list[dict]:
    """`rows` (an iterable of mappings, or anything with to_dict("records") such as a DataFrame) as
    new dicts with `day` as datetime.date, sorted by day; duplicate days fail."""
    records = rows.to_dict("records") if hasattr(rows, "to_dict") else rows
    out = []
    for row in records:
        if "day" not in row:
            raise ValueError(f"rows need a `day` column, got {sorted(row)}")
        out.append({**row, "day": as_date(row["day"])})
    out.sort(key=lambda row: row["day"])
    duplicates = sorted({a["day"] for a, b in zip(out, out[1:], strict=False) if a["day"] == b["day"]})
    if duplicates:
        raise ValueError(f"duplicate days: {duplicates[:5]}")
    return out


def _days(rows: list[dict]) -> list[date]:
    return [row["day"] for row in rows]


# -- features ----------------------------------------------------------------------------------------

# The holidays of each year as given with a request to the model process (years -> days), or None: then
# holiday_days asks the `holidays` package. The model process gets them from a process of their own
# (include/demand_forecast.holidays_payload): the package costs ~33 MB of memory (it imports every
# country's calendar), which the training process does not need to carry.
GIVEN_HOLIDAYS: dict[int, set[date]] | None = None


def holiday_days(years) -> set[date]:
    """Public holidays of the United States with New York's (subdiv="NY": Lincoln's Birthday,
    Election Day, ...), including the weekdays they are observed on (the package's default,
    observed=True) - python-holidays' docs, https://holidays.readthedocs.io/en/latest/#quick-start
    and the US entity (holidays/countries/united_states.py)."""
    years = sorted(set(years))
    if GIVEN_HOLIDAYS is not None:
        missing = [year for year in years if year not in GIVEN_HOLIDAYS]
        if missing:
            raise ValueError(f"no holidays given for {missing} (given: {sorted(GIVEN_HOLIDAYS)})")
        return set().union(*(GIVEN_HOLIDAYS[year] for year in years))
    import holidays  # noqa: PLC0415

    return set(holidays.country_holidays("US", subdiv="NY", years=years))


def holiday_years(days) -> list[int]:
    """The years whose holidays the features of `days` need: theirs and one either side (the day
    before / after a holiday crosses New Year)."""
    years = {as_date(day).year for day in days}
    return sorted(years | {year - 1 for year in years} | {year + 1 for year in years})


def feature_names() -> list[str]:
    return ([f"weekday_{n}" for n in range(7)]
            + ["holiday", "holiday_eve", "holiday_after", "year_sin", "year_cos", "half_year_sin", "half_year_cos",
               "trend_years"]
            + WEATHER_COLUMNS + ["precipitation_log1p"])


def features(rows):
    """(days, matrix): the rows' days sorted, and one float64 row per day with the columns of
    `feature_names()`: weekday one-hot (Monday = 0), the holiday flag and the day before / after a
    holiday, two annual harmonics (the season), years since TREND_ORIGIN, and the day's weather with
    log1p(precipitation) (rain's effect saturates: 30 mm is not 30 x 1 mm). The rows need `day` and
    the weather columns; a missing weather value fails."""
    import numpy as np  # noqa: PLC0415

    rows = _rows(rows)
    days = _days(rows)
    missing = sorted({c for row in rows for c in WEATHER_COLUMNS if c not in row})
    if missing:
        raise ValueError(f"weather columns missing: {missing}")
    weather = np.array([[math.nan if row[c] is None else float(row[c]) for c in WEATHER_COLUMNS] for row in rows],
                       dtype="float64").reshape(len(rows), len(WEATHER_COLUMNS))
    incomplete = [day for day, values in zip(days, weather, strict=True) if np.isnan(values).any()]
    if incomplete:
        raise ValueError(f"days without complete weather: {incomplete[:5]}")
    holiday = holiday_days({d.year for d in days} | {days[0].year - 1, days[-1].year + 1}) if days else set()
    one_day = timedelta(days=1)
    weekday = np.array([d.weekday() for d in days])
    # Day of the year as an angle (365.25 days a turn): smooth across New Year, leap years included.
    angle = np.array([(d - date(d.year, 1, 1)).days / 365.25 * 2 * math.pi for d in days], dtype="float64")
    columns = [(weekday == n).astype("float64") for n in range(7)]
    columns += [np.array([float(d in holiday) for d in days]), np.array([float(d + one_day in holiday) for d in days]),
                np.array([float(d - one_day in holiday) for d in days])]
    columns += [np.sin(angle), np.cos(angle), np.sin(2 * angle), np.cos(2 * angle)]
    columns += [np.array([(d - TREND_ORIGIN).days / 365.25 for d in days], dtype="float64")]
    columns += [weather[:, n] for n in range(len(WEATHER_COLUMNS))]
    columns += [np.log1p(np.clip(weather[:, WEATHER_COLUMNS.index("precipitation")], 0, None))]
    matrix = np.column_stack(columns) if days else np.empty((0, len(feature_names())))
    return days, matrix


# -- training ----------------------------------------------------------------------------------------

def known_history(rows, issued_on: date) -> list[dict]:
    """The rows known at issue time: days strictly before `issued_on` (what history_known_at.sql selects),
    sorted by day."""
    return [row for row in _rows(rows) if row["day"] < issued_on]


def training_rows(rows, issued_on: date) -> list[dict]:
    """The training rows, sorted by day - after checking that none is on or after `issued_on`
    (defence in depth behind history_known_at.sql's day < issued_on: raises LeakedFutureRow)."""
    rows = _rows(rows)
    future = [row["day"] for row in rows if row["day"] >= issued_on]
    if future:
        raise LeakedFutureRow(f"{len(future)} training row(s) on or after the issue date {issued_on}: "
                              f"{future[:5]} - a model must not see the days it forecasts")
    if any(row.get("trips") is None or not float(row["trips"]) > 0 for row in rows):
        raise ValueError("every training row needs trips > 0")
    return rows


def _window(rows: list[dict], before: date) -> list[dict]:
    """The days of `rows` (sorted) strictly before `before` within TRAINING_WINDOW_DAYS of the newest
    of them (the newest known day, not `before`: the publication gap does not shorten the window)."""
    known = [row for row in rows if row["day"] < before]
    if not known:
        return known
    start = known[-1]["day"] - timedelta(days=TRAINING_WINDOW_DAYS - 1)
    return [row for row in known if row["day"] >= start]


def new_model(spec: dict | None = None):
    spec = MODEL_SPEC if spec is None else spec
    from sklearn.pipeline import Pipeline  # noqa: PLC0415
    from sklearn.preprocessing import StandardScaler  # noqa: PLC0415

    if spec["estimator"] == "ridge":
        from sklearn.linear_model import Ridge  # noqa: PLC0415

        # solver="cholesky": closed form, no random state, no iteration count to converge.
        return Pipeline([("scale", StandardScaler()), ("ridge", Ridge(alpha=spec["alpha"], solver=spec["solver"]))])
    if spec["estimator"] == "mean":
        from sklearn.dummy import DummyRegressor  # noqa: PLC0415

        return DummyRegressor(strategy="mean")
    raise ValueError(f"unknown estimator {spec['estimator']!r} (ridge, mean)")


def fit(rows, spec: dict | None = None):
    """The model fitted on the rows (day, trips, weather). Features as a plain float64 array (no
    column names inside the pickle), target log(trips)."""
    import numpy as np  # noqa: PLC0415

    rows = _rows(rows)
    if len(rows) < MIN_TRAINING_DAYS:
        span = f"{rows[0]['day']}..{rows[-1]['day']}" if rows else "none"
        raise NotEnoughHistory(f"{len(rows)} days to train on ({span}), at least {MIN_TRAINING_DAYS} needed")
    _, x = features(rows)
    y = np.log(np.array([float(row["trips"]) for row in rows], dtype="float64"))
    return new_model(spec).fit(x, y)


def predict(model, rows) -> list[float]:
    """Predicted trips per day of the rows (sorted by day)."""
    import numpy as np  # noqa: PLC0415

    _, x = features(rows)
    return [float(v) for v in np.exp(model.predict(x))]


def model_bytes(model) -> bytes:
    return pickle.dumps(model, protocol=5)


def training_config(rows: list[dict], issued_on: date, spec: dict | None = None) -> dict:
    """What defines a training, besides the model's own bytes: hashed into model_version."""
    spec = MODEL_SPEC if spec is None else spec
    model = (f"Pipeline(StandardScaler, Ridge(alpha={spec['alpha']}, solver='{spec['solver']}')) on log(trips)"
             if spec["estimator"] == "ridge" else f"{spec['estimator']} of log(trips)")
    return {"issued_on": issued_on.isoformat(), "first_day": rows[0]["day"].isoformat(),
            "last_day": rows[-1]["day"].isoformat(), "rows": len(rows), "features": feature_names(),
            "trend_origin": TREND_ORIGIN.isoformat(), "training_window_days": TRAINING_WINDOW_DAYS, "model": model}


def model_version(issued_on: date, blob: bytes, config: dict) -> str:
    """`<issued_on>-<sha12>`: the first 12 hex digits of sha256(model bytes + the training config as
    sorted JSON) - the same inputs always give the same version."""
    digest = hashlib.sha256(blob + json.dumps(config, sort_keys=True).encode()).hexdigest()
    return f"{issued_on.isoformat()}-{digest[:12]}"


def months_seen(rows: list[dict]) -> dict[str, int]:
    """YYYY-MM: days of that month among the rows."""
    months: dict[str, int] = {}
    for row in rows:
        months[row["day"].strftime("%Y-%m")] = months.get(row["day"].strftime("%Y-%m"), 0) + 1
    return months


def library_versions() -> dict:
    from importlib import metadata  # noqa: PLC0415

    return {"python": platform.python_version(), **{name: metadata.version(name) for name in LIBRARIES}}


def train(rows, issued_on: date, spec: dict | None = None) -> dict:
    """Train the candidate of `issued_on` on the rows known then: {model, bytes, version, config,
    rows (the training rows), months_seen, libraries}. Rows on or after the issue date are dropped
    first (known_history) and the rest checked again (training_rows)."""
    rows = _window(training_rows(known_history(rows, issued_on), issued_on), issued_on)
    model = fit(rows, spec)
    blob = model_bytes(model)
    config = training_config(rows, issued_on, spec)
    return {"model": model, "bytes": blob, "version": model_version(issued_on, blob, config), "config": config,
            "rows": rows, "months_seen": months_seen(rows), "libraries": library_versions()}


# -- forecast ----------------------------------------------------------------------------------------

def forecast_days(issued_on: date) -> list[date]:
    return [issued_on + timedelta(days=lead) for lead in range(1, HORIZON_DAYS + 1)]


def forecast(model, issued_on: date, weather_rows, version: str) -> list[dict]:
    """The 7 rows of taxi_demand_forecast for `issued_on`, from the weather forecast at issue time
    (`weather_rows`: `day` and WEATHER_COLUMNS for exactly the days issued_on+1 .. issued_on+7)."""
    rows = _rows(weather_rows)
    expected = forecast_days(issued_on)
    if _days(rows) != expected:
        raise ValueError(f"weather for {_days(rows)}, the forecast of {issued_on} needs {expected[0]}..{expected[-1]}")
    predicted = predict(model, rows)
    return [{"issued_on": issued_on, "day": day, "lead_days": (day - issued_on).days, "predicted_trips": trips,
             "model_version": version} for day, trips in zip(expected, predicted, strict=True)]


# -- baseline ----------------------------------------------------------------------------------------

def seasonal_naive(history, days) -> list[float]:
    """Seasonal-naive forecast of `days`: each day gets the trips of the same weekday in the latest
    COMPLETE Monday-Sunday (ISO) week of `history` (all 7 days present) - the week as a whole, so a
    forecast week copies one real week, not a mix of weeks. Holidays are not adjusted: that is the
    baseline's point."""
    by_day = {row["day"]: row["trips"] for row in _rows(history)}
    if not by_day:
        raise NotEnoughHistory("no history for the seasonal-naive baseline")
    monday = max(by_day) - timedelta(days=max(by_day).weekday())
    while monday >= min(by_day) - timedelta(days=6):
        week = [monday + timedelta(days=n) for n in range(7)]
        if all(day in by_day for day in week):
            return [float(by_day[week[as_date(day).weekday()]]) for day in days]
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
    return (issued_on - _rows(history)[-1]["day"]).days - 1


def backtest_origins(history, issued_on: date, origins: int = BACKTEST_ORIGINS) -> list[date]:
    """The last `origins` weekly origins inside the known history, oldest first: days of the issue
    date's weekday whose 7 following days all have actuals."""
    days = _days(_rows(history))
    known = set(days)
    origin = days[-1] - timedelta(days=HORIZON_DAYS)
    origin -= timedelta(days=(origin.weekday() - issued_on.weekday()) % 7)
    found = []
    while len(found) < origins and origin >= days[0]:
        if all(day in known for day in forecast_days(origin)):
            found.append(origin)
        origin -= timedelta(days=7)
    return sorted(found)


def backtest(history, issued_on: date, origins: int = BACKTEST_ORIGINS, spec: dict | None = None) -> dict:
    """Rolling backtest of the method as it would have run at each of the last `origins` weekly
    origins of the history known at `issued_on`, with the publication gap of `issued_on`: at origin
    o, train on the days before o - gap (gap = gap_days), forecast o+1 .. o+7 from those days'
    OBSERVED weather (better than the forecast weather a real issue has: the backtest is optimistic
    about weather - scoring measures the real error later), and the seasonal-naive baseline from the
    same training days. MAPE pooled over all forecast days, model and baseline on the same days."""
    rows = training_rows(known_history(history, issued_on), issued_on)
    if not rows:
        raise NotEnoughHistory(f"no history before {issued_on}")
    gap = gap_days(rows, issued_on)
    runs, actual_all, model_all, baseline_all = [], [], [], []
    for origin in backtest_origins(rows, issued_on, origins):
        cutoff = origin - timedelta(days=gap)
        train_rows = _window(rows, cutoff)
        if len(train_rows) < MIN_TRAINING_DAYS:
            continue  # too early in the history: the run says how many origins it used
        week = set(forecast_days(origin))
        target = [row for row in rows if row["day"] in week]
        predicted = predict(fit(train_rows, spec), target)
        baseline = seasonal_naive(train_rows, _days(target))
        actual = [float(row["trips"]) for row in target]
        runs.append({"origin": origin.isoformat(), "train_first_day": train_rows[0]["day"].isoformat(),
                     "train_last_day": train_rows[-1]["day"].isoformat(), "cutoff": cutoff.isoformat(),
                     "mape": mape(actual, predicted), "baseline_mape": mape(actual, baseline)})
        actual_all += actual
        model_all += predicted
        baseline_all += baseline
    if not runs:
        raise NotEnoughHistory(f"no backtest origin before {issued_on} has {MIN_TRAINING_DAYS} days to train on "
                               f"with the {gap}-day publication gap (history {rows[0]['day']}..{rows[-1]['day']})")
    return {"gap_days": gap, "origins": runs, "days": len(actual_all), "mape": mape(actual_all, model_all),
            "mae": mae(actual_all, model_all), "baseline_mape": mape(actual_all, baseline_all),
            "baseline_mae": mae(actual_all, baseline_all)}


# -- the model process -------------------------------------------------------------------------------
# include/demand_forecast.run_model writes one JSON request to the process's stdin and reads one JSON
# answer from its stdout. Dates travel as ISO strings, the model as base64 of its pickle. The answer
# carries the process's own peak RSS, so the task's log says what the model cost.

def _peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM, the high-water mark of its own memory since exec. Not getrusage's
    ru_maxrss: Linux carries that across exec, so a child would report its parent's peak."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no VmHWM in /proc/self/status")


def jsonable(value):
    """`value` for json.dumps: dates as ISO strings, Decimal (numeric columns) and numpy scalars as floats."""
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    return float(value)


def handle(request: dict) -> dict:
    """One request of the model process:
    - holidays: {years} -> {holidays: {year: [days]}} (the only operation that imports `holidays`);
    - train: {issued_on, history, spec, holidays} -> {model_b64, version, config, months_seen, libraries,
      sha256, backtest}: the candidate and its rolling backtest, from the same history;
    - forecast: {issued_on, model_b64, version, weather, holidays} -> {rows}: the 7 forecast rows;
    - predict: {requests: [{model_b64, rows}], holidays} -> {predictions}: per request, trips per day of
      its rows (sorted by day)."""
    global GIVEN_HOLIDAYS  # noqa: PLW0603 - one request per process
    operation = request["op"]
    if operation == "holidays":
        return jsonable({"holidays": {str(year): sorted(holiday_days([year])) for year in request["years"]},
                          "peak_rss_mb": _peak_rss_mb()})
    GIVEN_HOLIDAYS = {int(year): {as_date(day) for day in days} for year, days in request["holidays"].items()}
    try:
        if operation == "train":
            issued_on = as_date(request["issued_on"])
            trained = train(request["history"], issued_on, request["spec"])
            tested = backtest(request["history"], issued_on, spec=request["spec"])
            answer = {"model_b64": base64.b64encode(trained["bytes"]).decode(), "version": trained["version"],
                      "config": trained["config"], "months_seen": trained["months_seen"],
                      "libraries": trained["libraries"],
                      "sha256": hashlib.sha256(trained["bytes"]).hexdigest(), "backtest": tested}
        elif operation == "forecast":
            model = pickle.loads(base64.b64decode(request["model_b64"]))  # noqa: S301 - our own bucket's model
            answer = {"rows": forecast(model, as_date(request["issued_on"]), request["weather"], request["version"])}
        elif operation == "predict":
            answer = {"predictions": [predict(pickle.loads(base64.b64decode(item["model_b64"])),  # noqa: S301
                                              item["rows"]) for item in request["requests"]]}
        else:
            raise ValueError(f"unknown model operation {operation!r} (holidays, train, forecast, predict)")
    finally:
        GIVEN_HOLIDAYS = None
    return jsonable({**answer, "peak_rss_mb": _peak_rss_mb()})


def main() -> int:
    """Read one request from stdin, write one answer to stdout. A refusal of the data (not enough
    history, a leaked future row, a malformed row) answers {"error", "message"} with exit status 3;
    anything else is a crash (traceback on stderr, exit status 1)."""
    request = json.load(sys.stdin)
    try:
        answer = handle(request)
    except (NotEnoughHistory, ValueError) as error:
        json.dump({"error": type(error).__name__, "message": str(error)}, sys.stdout)
        return 3
    json.dump(answer, sys.stdout, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
