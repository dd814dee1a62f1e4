"""Where the weekly NYC yellow-taxi demand forecast (nyc_taxi_demand_forecast) meets Airflow: the
model process, the publication gate, the model card, scoring, and where models and forecasts are
stored. The model itself (features, training, baseline, backtest) is include/demand_model.py.

The model runs in a process of its own (`run_model`), started with the interpreter of `.venv-model`
(numpy, scikit-learn, holidays: requirements-model.txt) - not in the Airflow task process. Why: the
task process already holds the Airflow SDK and the hooks (~135 MB); scikit-learn imports scipy.stats
and, where pandas is installed (it is, in the Airflow image), pandas and pyarrow: in one process that
is ~310 MB before any data, over the 300 MB a task may use. In its own environment without pandas
the training process peaks at ~120 MB, the task's two processes together at ~250-280 MB
(docs/demand-forecast.md#cost). It also keeps the model's library pins independent of Airflow's
constraints, and the process gets no Airflow environment: no connection or secret reaches it.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import math
import os
import resource
import subprocess
from datetime import date
from pathlib import Path

from airflow.sdk.exceptions import AirflowFailException

from include import demand_model
from include.demand_model import as_date, forecast_days, mae, mape

log = logging.getLogger(__name__)

TABLE = "taxi_demand_forecast"
ACCURACY_TABLE = "taxi_demand_forecast_accuracy"
HISTORY_TABLE = "taxi_daily_weather"
MODEL_BUCKET = "models"
MODEL_PREFIX = "nyc_taxi_demand/"
S3_CONN_ID = "aws_default"
WAREHOUSE_CONN_ID = "warehouse_db"

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

ROOT = Path(__file__).resolve().parents[1]
# The model process's interpreter: DEMAND_MODEL_PYTHON, else the project's .venv-model (built by
# `make install` locally and by the Dockerfile in the image, both from requirements-model.txt).
MODEL_PYTHON_ENV = "DEMAND_MODEL_PYTHON"
MODEL_PROCESS_TIMEOUT_S = 600
# The model process's whole environment: nothing of Airflow's (connections, secrets) goes with it. One
# BLAS/OpenMP thread: the same floating-point sums on any worker size (byte-identical models), and no
# per-thread buffers.
# (PYTHON* variables would be ignored: the process runs with -I.)
MODEL_PROCESS_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
                     "MKL_NUM_THREADS": "1", "LC_ALL": "C.UTF-8"}


class ForecastGateFailed(AirflowFailException):
    """The candidate model's backtest error does not beat the baseline or the previous published
    model by the stated margins: nothing is published, the previous forecast stands."""


class NotEnoughHistory(AirflowFailException):
    """taxi_daily_weather holds too few days before the issue date to train or to backtest."""


class ModelDataRefused(AirflowFailException):
    """The model process refused its input (a row on or after the issue date, a malformed row):
    a retry would see the same data."""


# -- the model process -------------------------------------------------------------------------------

def model_python() -> Path:
    configured = os.environ.get(MODEL_PYTHON_ENV)
    python = Path(configured) if configured else ROOT / ".venv-model" / "bin" / "python"
    if not python.is_file():
        raise AirflowFailException(
            f"the demand model's interpreter {python} is missing: `make install` builds .venv-model locally and "
            f"the Dockerfile builds it in the image (both from requirements-model.txt), or set {MODEL_PYTHON_ENV} "
            "to a Python with those packages (docs/demand-forecast.md)")
    return python


def run_model(operation: str, **request) -> dict:
    """One request to a fresh model process (include/demand_model.handle): `train`, `forecast` or
    `predict`. A refusal of the data fails the task without retry, naming the model's reason; a
    crash (killed, out of memory, a library error) fails it with the process's last stderr lines,
    and Airflow's retries try again."""
    python = model_python()
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from include.demand_model import main; "
            "sys.exit(main())")
    payload = json.dumps(demand_model.jsonable({"op": operation, **request}))
    try:
        done = subprocess.run([str(python), "-I", "-c", code], input=payload, capture_output=True, text=True,
                              env=MODEL_PROCESS_ENV, cwd=ROOT, timeout=MODEL_PROCESS_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as error:
        raise RuntimeError(f"the demand model process ({operation}) did not answer in "
                           f"{MODEL_PROCESS_TIMEOUT_S} s") from error
    if done.returncode == 3:
        refusal = json.loads(done.stdout)
        kind = NotEnoughHistory if refusal["error"] == "NotEnoughHistory" else ModelDataRefused
        raise kind(f"the demand model refused the data ({refusal['error']}): {refusal['message']}")
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-8:])
        raise RuntimeError(f"the demand model process ({operation}) failed with exit status {done.returncode} "
                           f"({python}):\n{tail}")
    answer = json.loads(done.stdout)
    log.info("demand model process (%s): peak RSS %.0f MB; this task process so far %.0f MB", operation,
             answer["peak_rss_mb"], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return answer


def holidays_payload(days) -> dict:
    """The US/New York holidays of the years the features of `days` need, from a model process of their
    own: {year: [ISO days]}, handed to the next model request (include/demand_model.GIVEN_HOLIDAYS)."""
    return _holidays_of_years(tuple(demand_model.holiday_years(days)))


@functools.cache
def _holidays_of_years(years: tuple[int, ...]) -> dict:
    # The same years, the same package version: the same days. Asked once per task process.
    return run_model("holidays", years=list(years))["holidays"]


def train_and_backtest(history: list[dict], issued_on: date) -> dict:
    """The candidate of `issued_on` trained and backtested in the model process: {bytes, version,
    config, months_seen, libraries, sha256, backtest, peak_rss_mb}."""
    answer = run_model("train", issued_on=issued_on, history=history, spec=demand_model.MODEL_SPEC,
                       holidays=holidays_payload([row["day"] for row in history]))
    answer["bytes"] = base64.b64decode(answer.pop("model_b64"))
    if hashlib.sha256(answer["bytes"]).hexdigest() != answer["sha256"]:
        raise RuntimeError("the demand model process's model bytes do not match their sha256")
    return answer


def forecast(model_blob: bytes, issued_on: date, weather: list[dict], version: str) -> list[dict]:
    """The 7 forecast rows of `issued_on` from the weather as forecast (include/demand_model.forecast)."""
    rows = run_model("forecast", issued_on=issued_on, model_b64=base64.b64encode(model_blob).decode(),
                     weather=weather, version=version, holidays=holidays_payload([row["day"] for row in weather]))
    return [{**row, "issued_on": date.fromisoformat(row["issued_on"]), "day": date.fromisoformat(row["day"])}
            for row in rows["rows"]]


def predict(models: list[tuple[bytes, list[dict]]]) -> list[list[float]]:
    """For each (model bytes, rows): predicted trips per day of the rows, sorted by day
    (include/demand_model.predict) - all in one model process."""
    if not models:
        return []
    days = [row["day"] for _, rows in models for row in rows]
    return run_model("predict", requests=[{"model_b64": base64.b64encode(blob).decode(), "rows": rows}
                                          for blob, rows in models],
                     holidays=holidays_payload(days))["predictions"]


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

def model_card(trained: dict, backtest_result: dict, issued_on: date) -> dict:
    """The model card (store as JSON with sort_keys): what it was trained on, how, with which
    libraries, and how it did in the backtest against the baseline; the gate's margins. `trained`
    is what the model process answers (train_and_backtest) or include/demand_model.train returns."""
    config = trained["config"]
    return {
        "model_version": trained["version"],
        "issued_on": issued_on.isoformat(),
        "target": "log(trips) per New York day; prediction exp(model)",
        "model": config["model"],
        "training_window": {"first_day": config["first_day"], "last_day": config["last_day"],
                            "rows": config["rows"], "window_days": config["training_window_days"],
                            "source": f"{HISTORY_TABLE} (observed weather), days < issued_on"},
        "months_seen": trained["months_seen"],  # YYYY-MM: days of that month in the training rows
        "features": config["features"],
        "trend_origin": config["trend_origin"],
        "holidays": "holidays.country_holidays('US', subdiv='NY'), observed days included",
        "libraries": trained["libraries"],
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
    actual = {as_date(r["day"]): float(r["trips"]) for r in actual_rows}
    baseline = {as_date(r["day"]): float(r.get("predicted_trips", r.get("trips"))) for r in baseline_rows}
    scored = sorted((as_date(r["day"]), float(r["predicted_trips"])) for r in forecast_rows
                    if as_date(r["day"]) in actual)
    missing = [day for day, _ in scored if day not in baseline]
    if missing:
        raise ValueError(f"no baseline for {missing}")
    if not scored:
        return {"days_scored": 0, "mae": None, "mape": None, "baseline_mape": None}
    truth = [actual[day] for day, _ in scored]
    return {"days_scored": len(scored), "mae": mae(truth, [p for _, p in scored]),
            "mape": mape(truth, [p for _, p in scored]),
            "baseline_mape": mape(truth, [baseline[day] for day, _ in scored])}


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


def load_model(version: str, conn_id: str = S3_CONN_ID) -> bytes:
    """The pickled model of `version`, as bytes: only the model process unpickles it (pickle runs
    code; this project only ever reads models it wrote itself)."""
    from include.object_storage import naming_s3, s3_path  # noqa: PLC0415

    key = model_key(version, "model.pkl")
    path = s3_path(MODEL_BUCKET, key, conn_id)
    with naming_s3("reading", path, MODEL_BUCKET, key, conn_id):
        return path.read_bytes()


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
    days = sorted(as_date(r["day"]) for r in rows)
    problems = []
    if days != forecast_days(issued_on):
        problems.append(f"days {days}, expected {forecast_days(issued_on)}")
    if any(as_date(r["issued_on"]) != issued_on for r in rows):
        problems.append("rows of another issue date")
    if any(r["lead_days"] != (as_date(r["day"]) - issued_on).days for r in rows):
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
