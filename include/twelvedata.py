"""TwelveData: the USD/EUR exchange rate at a run's logical date, and what to do when it fails.

`fetch_exchange_rate_isolated` is self-contained (imports inside, no project or Airflow imports)
so PythonVirtualenvOperator can run it in a virtualenv that has only `twelvedata`. Everything
else here runs in Airflow's own interpreter.

Failure policy (free plan: 8 credits a minute): a 429 "out of API credits" and 5xx/network
errors, and an answer that broke off (cut short), are retried with exponential backoff; any
other error (bad key, unknown symbol, bad request, an empty or malformed answer) fails the task at
once with the API's message. The API key never appears in messages: request URLs carry it, so
errors are re-worded without them.

Closed markets. Forex trades from Sunday 17:00 to Friday 17:00 New York time (22:00 UTC in
winter, 21:00 UTC in summer). The every-minute DAGs are scheduled only in those hours
(`forex_minutes_timetable`), so a weekend creates no runs at all. A minute that still has no rate
(a manual run on a Saturday, a holiday, a quiet feed) is a visible skip, never a failure, a retry
or a record: TwelveData answers "No data is available on the specified dates" (code 400, possibly
with HTTP 200), or a rate whose own timestamp is far older than the minute asked for - and a
record must not claim a time it does not have.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import RetryAction, RetryDecision, RetryPolicy
from airflow.sdk.exceptions import AirflowFailException

from include.runs import run_stamp

CONN_ID = "twelvedata"
API_KEY_VARIABLE = "TWELVEDATA_API_KEY"
POOL = "twelvedata_api"
SYMBOL = "USD/EUR"
MARKET_BUCKET = "market-data"
TWELVEDATA_VERSION = "1.4.0"  # what the virtualenv tasks install (same as requirements.txt)
# Message prefixes set by fetch_exchange_rate_isolated; they survive the trip out of a virtualenv
# (as text) and decide what happens next.
RATE_LIMITED = "TwelveData rate limit"
UNAVAILABLE = "TwelveData unavailable"
REJECTED = "TwelveData rejected the request"
KEY_MISSING = "TwelveData API key missing"
NO_RATE = "TwelveData has no rate"
# Exit code of the virtualenv task for "no rate for this minute": PythonVirtualenvOperator's
# skip_on_exit_code turns it into a skipped task (the reason is in the task log).
NO_RATE_EXIT_CODE = 99
# Forex hours in New York time, DST-aware: Mon-Thu all day, Friday until 16:59, Sunday from 17:00
# (the FX week: FXCM's API team, fxcm/RestAPI#166 - "opens on Sundays between 5:00 PM ET and 5:15
# PM ET and closes on Fridays around 4:55 PM ET"; twelvedata-python#47 shows TwelveData's first
# bar of the week at Sunday 22:00 UTC in winter).
FOREX_CRONS = ("* * * * 1-4", "* 0-16 * * 5", "* 17-23 * * 0")
FOREX_TIMEZONE = "America/New_York"


class TwelveDataError(RuntimeError):
    """TwelveData gave no usable exchange rate."""


class TwelveDataRetryable(TwelveDataError):
    """Out of credits for this minute, server error or network failure: retried with backoff."""


class TwelveDataRejected(TwelveDataError, AirflowFailException):
    """Wrong key, unknown symbol, bad request, empty or malformed answer: fails at once."""


def forex_minutes_timetable():
    """Every minute the forex market is open, and no other (see the module docstring)."""
    from airflow.sdk import MultipleCronTriggerTimetable  # noqa: PLC0415

    return MultipleCronTriggerTimetable(*FOREX_CRONS, timezone=FOREX_TIMEZONE)


def fetch_exchange_rate_isolated(symbol: str, at: str, base_url: str, apikey: str | None = None,
                                 no_rate_exit_code: int | None = None, max_quote_age_s: int = 15 * 60) -> dict:
    """The exchange rate of `symbol` at `at` (ISO 8601; the run's logical date) as a JSON-ready
    record. Without `apikey`, the TWELVEDATA_API_KEY environment variable is used.

    Self-contained: runs as is inside a PythonVirtualenvOperator whose venv has `twelvedata`.
    Raises RuntimeError whose message starts with one of the module's prefixes. When TwelveData
    has no rate for that minute (closed market) it raises one starting "TwelveData has no rate" -
    or, with `no_rate_exit_code`, prints that message and exits the process with that code.
    A rate whose own timestamp is more than `max_quote_age_s` older than `at` is not the rate "at"
    that minute (closed market, silent feed): no rate either, never a record under a false time.
    """
    import json  # noqa: PLC0415 - everything is imported here: this function runs in a bare venv
    import os  # noqa: PLC0415
    import re  # noqa: PLC0415
    import sys  # noqa: PLC0415
    from datetime import UTC, datetime  # noqa: PLC0415

    import requests  # noqa: PLC0415
    from twelvedata import TDClient  # noqa: PLC0415
    from twelvedata.exceptions import InternalServerError, TwelveDataError  # noqa: PLC0415

    if apikey is None:
        apikey = os.environ.get("TWELVEDATA_API_KEY", "")
        how_to = (
            "Set the environment variable TWELVEDATA_API_KEY for Airflow's workers (.env.local: read by make run "
            "and by `astro dev start --env .env.local`; a secret Deployment environment variable on Astro; "
            "free keys: https://twelvedata.com/pricing)."
        )
    else:
        how_to = (
            "Set the Airflow variable TWELVEDATA_API_KEY to your TwelveData key (Admin -> Variables, or "
            "AIRFLOW_VAR_TWELVEDATA_API_KEY in .env.local - read by make run and by `astro dev start --env "
            ".env.local`; free keys: https://twelvedata.com/pricing)."
        )
    if not apikey or not apikey.strip() or apikey.strip().upper().startswith(("REPLACE_ME", "MOCKED_", "NON_DEFAULT")):
        raise RuntimeError(f"TwelveData API key missing: the key is empty or a placeholder. {how_to}")

    def scrub(text: str) -> str:
        text = text.replace(apikey, "***")
        return re.sub(r"apikey=[^&\s'\"]+", "apikey=***", text)

    def api_message(text: str) -> str:
        try:  # error bodies come back as raw JSON text when the HTTP status is not 200
            return json.loads(text).get("message") or text
        except (ValueError, AttributeError):
            return text

    def no_rate(reason: str):
        message = f"TwelveData has no rate for {symbol} at {date} UTC: {reason}"
        if no_rate_exit_code is not None:
            print(message, file=sys.stderr, flush=True)
            sys.exit(no_rate_exit_code)
        raise RuntimeError(message)

    moment = datetime.fromisoformat(at).astimezone(UTC)
    # One of the two documented formats (twelvedata.com/docs, exchange rate: `2006-01-02` or
    # `2006-01-02T15:04:05`), in the timezone named by `timezone`.
    date = moment.strftime("%Y-%m-%dT%H:%M:%S")
    failure: str | None = None
    try:
        client = TDClient(apikey=apikey, base_url=base_url.rstrip("/"))
        payload = client.exchange_rate(symbol=symbol, date=date, timezone="UTC").as_json()
    except TwelveDataError as exc:
        message = scrub(api_message(str(exc)))
        if "No data is available" in message:
            failure = "no rate: " + message
        elif isinstance(exc, InternalServerError):
            failure = f"TwelveData unavailable ({type(exc).__name__}): {message}"
        elif "API credits" in message:
            failure = f"TwelveData rate limit: {message}"
        else:
            failure = f"TwelveData rejected the request ({type(exc).__name__}): {message}"
    except requests.exceptions.JSONDecodeError as exc:
        # A body that broke off (empty, or cut inside its last value) is the server's or the line's
        # trouble and is retried; text that is not JSON from the start is a wrong answer. (The same
        # rule as include/http_api.parse_json_body, inlined: this function runs in a bare venv.)
        doc, pos = exc.doc or "", exc.pos or 0
        cut_value = r'(?:"(?:[^"\\]|\\.)*\\?|[-+.0-9eE]+|t(?:r(?:ue?)?)?|f(?:a(?:l(?:se?)?)?)?|n(?:u(?:ll?)?)?)\s*'
        if pos >= len(doc.rstrip()) or re.fullmatch(cut_value, doc[pos:]):
            failure = f"TwelveData unavailable: its answer broke off after {len(doc)} characters (cut short)"
        else:
            failure = f"TwelveData rejected the request: malformed JSON answer ({scrub(str(exc))})"
    except requests.RequestException as exc:
        failure = f"TwelveData unavailable: {type(exc).__name__}: {scrub(str(exc))}"
    if failure and failure.startswith("no rate: "):
        no_rate(failure.removeprefix("no rate: ") + " (the forex market is closed then, or the feed had no quote)")
    if failure:
        raise RuntimeError(failure)  # raised outside `except`: no chained traceback carrying the key's URL

    if not isinstance(payload, dict) or not payload:
        raise RuntimeError(f"TwelveData rejected the request: empty answer for {symbol} at {date} UTC")
    rate = payload.get("rate")
    if not isinstance(rate, (int, float)) or isinstance(rate, bool) or rate <= 0:
        raise RuntimeError(
            f"TwelveData rejected the request: answer without a valid rate: {scrub(json.dumps(payload))}"
        )
    quoted = payload.get("timestamp")
    stale = isinstance(quoted, (int, float)) and not isinstance(quoted, bool) and \
        moment.timestamp() - quoted > max_quote_age_s
    if stale:
        no_rate(f"its newest rate is from {datetime.fromtimestamp(quoted, UTC).isoformat()}, more than "
                f"{max_quote_age_s // 60} minutes earlier (market closed or feed silent): not stored as this minute's")
    return {
        "symbol": payload.get("symbol", symbol),
        "rate": float(rate),
        "timestamp": payload.get("timestamp"),
        "rate_at": moment.isoformat(),
    }


def fetch_exchange_rate(symbol: str, at: str, base_url: str, apikey: str) -> dict:
    """fetch_exchange_rate_isolated in Airflow's interpreter, its failures as typed exceptions;
    a minute without a rate skips the task."""
    try:
        return fetch_exchange_rate_isolated(symbol, at, base_url, apikey)
    except RuntimeError as exc:
        message = str(exc)
    if message.startswith(NO_RATE):
        from airflow.sdk.exceptions import AirflowSkipException  # noqa: PLC0415

        raise AirflowSkipException(message)
    if message.startswith((RATE_LIMITED, UNAVAILABLE)):
        raise TwelveDataRetryable(message)
    raise TwelveDataRejected(message)


class TwelveDataRetryPolicy(RetryPolicy):
    """Retry rate limits and outages with exponential backoff; fail everything else at once.

    Works on the exception text too, so it also decides for a virtualenv task, whose error
    reaches Airflow as an AirflowException carrying the venv's message.
    """

    def __init__(self, first_delay: timedelta = timedelta(seconds=20), max_delay: timedelta = timedelta(minutes=2)):
        self.first_delay = first_delay
        self.max_delay = max_delay

    def evaluate(self, exception, try_number, max_tries, context=None):  # noqa: D102 - RetryPolicy API
        text = str(exception)
        if isinstance(exception, TwelveDataRetryable) or RATE_LIMITED in text or UNAVAILABLE in text:
            delay = min(self.first_delay * (2 ** max(try_number - 1, 0)), self.max_delay)
            return RetryDecision(action=RetryAction.RETRY, retry_delay=delay,
                                 reason="TwelveData credits or service: backing off")
        return RetryDecision(action=RetryAction.FAIL, reason="TwelveData error that retrying cannot fix")


def _venv_queue() -> str:
    import os  # noqa: PLC0415

    return os.environ.get("VENV_TASK_QUEUE") or "default"


def venv_cache_dir() -> str:
    """Where PythonVirtualenvOperator keeps its venvs between runs ($AIRFLOW_VENV_CACHE_DIR,
    else $AIRFLOW_HOME/venv-cache): the first run builds the venv, later ones reuse it."""
    import os  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    return os.environ.get("AIRFLOW_VENV_CACHE_DIR") or os.path.join(
        os.environ.get("AIRFLOW_HOME", tempfile.gettempdir()), "venv-cache"
    )


def exchange_rate_venv_operator(task_id: str = "extract_exchange_rate", apikey_template: str | None = None):
    """PythonVirtualenvOperator running fetch_exchange_rate_isolated in a cached venv that installs
    `twelvedata` itself. Only the run's logical date crosses into the venv (as ISO text, so the
    venv needs no pendulum), plus the base URL of the `twelvedata` connection and, when
    `apikey_template` is given, the key (else the venv reads TWELVEDATA_API_KEY from its env).
    A minute without a rate exits with NO_RATE_EXIT_CODE, which skips the task.
    Use inside a DAG whose user_defined_macros include twelvedata_base_url (see USER_MACROS)."""
    from airflow.providers.standard.operators.python import PythonVirtualenvOperator  # noqa: PLC0415

    op_kwargs = {
        "symbol": SYMBOL,
        "at": "{{ (dag_run.logical_date or dag_run.run_after).isoformat() }}",
        "base_url": "{{ twelvedata_base_url() }}",
        "no_rate_exit_code": NO_RATE_EXIT_CODE,
    }
    if apikey_template is not None:
        op_kwargs["apikey"] = apikey_template
    return PythonVirtualenvOperator(
        task_id=task_id,
        python_callable=fetch_exchange_rate_isolated,
        requirements=[f"twelvedata=={TWELVEDATA_VERSION}"],
        serializer="cloudpickle",
        system_site_packages=False,
        venv_cache_path=venv_cache_dir(),
        op_kwargs=op_kwargs,
        skip_on_exit_code=NO_RATE_EXIT_CODE,
        pool=POOL,
        retries=4,
        retry_policy=TwelveDataRetryPolicy(),
        # Celery: the worker queue that keeps the venv and uv caches warm (make run EXECUTOR=celery sets
        # VENV_TASK_QUEUE=venv; on Astro, a worker queue of that name - docs/executors.md).
        queue=_venv_queue(),
    )


def _twelvedata_base_url() -> str:
    from include.http_api import base_url  # noqa: PLC0415

    return base_url(CONN_ID)


# Jinja macros for the venv DAGs: the venv has no Airflow, so the base URL is resolved outside it.
USER_MACROS = {"twelvedata_base_url": _twelvedata_base_url}


def market_data_key(dag_run, symbol: str = SYMBOL) -> str:
    """`<dag_id>/USD_EUR/<logical date>.json`: one object per run, the logical date in the key."""
    return f"{dag_run.dag_id}/{symbol.replace('/', '_')}/{run_stamp(dag_run)}.json"


def market_data_event(record: dict, dag_run) -> dict:
    """Extra of a market-data object's asset event: which object, and the rate it holds."""
    return {"key": market_data_key(dag_run), "symbol": record["symbol"], "rate": record["rate"],
            "rate_at": record["rate_at"]}


def write_record_to_s3(record: dict, dag_run, bucket: str = MARKET_BUCKET, conn_id: str = "aws_default") -> str:
    """Store the run's record as one JSON object (a re-run overwrites it: same key)."""
    import json  # noqa: PLC0415

    from include.object_storage import write_object  # noqa: PLC0415

    if not record or not isinstance(record.get("rate"), (int, float)):
        raise TwelveDataRejected(f"refusing to store an empty or rate-less record: {record!r}")
    return write_object(json.dumps(record, sort_keys=True), bucket, market_data_key(dag_run), conn_id)
