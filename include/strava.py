"""Strava: OAuth2 token kept in Redis, activities of a sync window, validation, warehouse upsert.

Token handling follows Strava's rules: access tokens live 6 hours and the refresh token may change
on every refresh, so every new token is written to Redis (key STRAVA_TOKEN) before it is used -
losing the newest refresh token locks the athlete out. The client secret and both tokens are
registered with Airflow's secrets masker and never put into messages.

Which activities a run reads. Strava lists an activity only once it is uploaded - minutes after
it ends from a phone, hours or days later from a watch that syncs late - while `after`/`before`
filter on its START time. A run that asked for the activities started in its own hour would miss
nearly all of them, for good. So each run reads every activity that started from LOOKBACK (7
days) before the last successful load's end - the watermark `strava_sync_state.synced_until`,
kept in the warehouse with the rows - up to its own data interval end. The idempotent upsert
absorbs the overlap, late uploads and edits of the week arrive, and a paused or failing pipeline
catches up on its next success. One run a day (the one ending at 00:00 UTC) reads the whole
history instead: older edits and deletions reach the warehouse within a day. An activity in the
window that Strava no longer lists was deleted (or made private) and is deleted here too.
Cost: two reads an hour for most athletes, plus one page per 200 activities once a day - far
within the 100 reads / 15 min and 1,000 / day of an application (developers.strava.com/docs/rate-limits).

Invalid records fail the load: the error lists every bad record by id and field and nothing is
written (one transaction). A silently skipped activity would be a silent hole in the data.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

from airflow.sdk import RetryAction, RetryDecision, RetryPolicy
from airflow.sdk.exceptions import AirflowFailException
from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError

from include.http_api import CONNECT_TIMEOUT_S, READ_TIMEOUT_S, parse_json_body
from include.runs import require_data_interval, run_stamp

CONN_ID = "strava"
REDIS_CONN_ID = "redis_default"
TOKEN_KEY = "STRAVA_TOKEN"  # noqa: S105 - a Redis key name, not a secret
CLIENT_VARIABLE = "STRAVA_CLIENT"
SECRET_VARIABLE = "STRAVA_CLIENT_SECRET"  # noqa: S105 - a variable name
TOKEN_PATH = "/oauth/token"  # noqa: S105 - a URL path
ACTIVITIES_PATH = "/api/v3/athlete/activities"
PER_PAGE = 200  # Strava's maximum
RAW_BUCKET = "lifedata"
LOOKBACK = timedelta(days=7)  # uploads later than this after the last load are picked up by the daily sweep
FULL_SYNC_HOUR_UTC = 0  # the run whose data interval ends at this hour reads the whole history
SYNC_STREAM = "athlete/activities"
BOOTSTRAP_HOWTO = (
    "Put a first token into Redis: `make strava-token CODE=<authorization code>` (exchanges an "
    "authorization code from https://www.strava.com/oauth/authorize) or `make strava-token "
    "TOKEN_FILE=<token.json>`; against the offline stand-in, `make strava-token OFFLINE=1 "
    "CODE=offline-authorization-code` (`make run OFFLINE=1` does that at start) - see docs/strava.md."
)
TOKEN_FIELDS = ("token_type", "access_token", "refresh_token", "expires_at", "expires_in", "scope")
CREDENTIALS_HOWTO = (
    "Set the Airflow variables STRAVA_CLIENT and STRAVA_CLIENT_SECRET to your Strava app's Client ID and Client "
    "Secret (https://www.strava.com/settings/api): AIRFLOW_VAR_STRAVA_CLIENT=... and "
    "AIRFLOW_VAR_STRAVA_CLIENT_SECRET=... in .env.local (read by make run and by `astro dev start --env .env.local`), "
    "Admin -> Variables in the UI, or secret Deployment environment variables on Astro - docs/strava.md."
)

# requests-oauthlib logs the refresh request's body (client secret included) at DEBUG.
for _name in ("requests_oauthlib", "oauthlib"):
    logging.getLogger(_name).setLevel(logging.WARNING)


class StravaError(RuntimeError):
    """Strava gave no usable answer."""


class StravaRetryable(StravaError):
    """Rate limited (429) or server/network trouble (an answer that broke off included): retried with backoff (or after
    `retry_after`, when Strava's windows say when the limit resets)."""

    def __init__(self, message: str, retry_after: timedelta | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class StravaRejected(StravaError, AirflowFailException):
    """Bad token, failed refresh, an answer that is whole but wrong, invalid records: fails at once."""


class StravaActivity(BaseModel):
    """One activity as stored in strava_activity; unknown fields are ignored, missing optional
    ones become NULL, numbers stay floats (never truncated)."""

    model_config = ConfigDict(extra="ignore")

    id: int
    name: str
    type: str
    start_date: AwareDatetime
    distance: float
    moving_time: float
    average_speed: float
    max_speed: float
    average_cadence: float | None = None
    average_heartrate: float | None = None
    weighted_average_watts: float | None = None
    kilojoules: float | None = None


def require_credentials(client_id: str, client_secret: str) -> None:
    """Both app credentials set, and not placeholders - before any call, naming what is missing."""
    missing = [name for name, value in ((CLIENT_VARIABLE, client_id), (SECRET_VARIABLE, client_secret))
               if not (value or "").strip() or value.strip().upper().startswith("REPLACE_ME")]
    if missing:
        raise StravaRejected(f"Strava app credentials missing: {' and '.join(missing)} not set. {CREDENTIALS_HOWTO}")


# redis-py waits forever by default (and redis-py 8 retries a timeout 10 times): a paused or
# unreachable Redis would hold the task, and the DAG's only run slot, until someone noticed. A
# token read or write takes milliseconds: 5 s per try, one retry.
REDIS_CONNECT_TIMEOUT_S = 5
REDIS_SOCKET_TIMEOUT_S = 5
REDIS_RETRIES = 1


def redis_client(conn_id: str = REDIS_CONN_ID):
    """The token store, through RedisHook and the `redis_default` connection, with timeouts."""
    from airflow.providers.redis.hooks.redis import RedisHook  # noqa: PLC0415

    client = RedisHook(redis_conn_id=conn_id).get_conn()
    options = client.connection_pool.connection_kwargs  # used for every connection the pool opens
    if options.get("socket_connect_timeout") is None:
        options["socket_connect_timeout"] = REDIS_CONNECT_TIMEOUT_S
    if options.get("socket_timeout") is None:
        options["socket_timeout"] = REDIS_SOCKET_TIMEOUT_S
    from redis.backoff import ExponentialBackoff  # noqa: PLC0415
    from redis.retry import Retry  # noqa: PLC0415

    options["retry"] = Retry(ExponentialBackoff(cap=1, base=0.2), REDIS_RETRIES)
    return client


def _redis_failure(client, exc: Exception, doing: str) -> StravaRetryable:
    """A Redis error that names the service and what was being done (not just "Timeout reading
    from socket")."""
    options = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {}) or {}
    where = f"{options.get('host', '?')}:{options.get('port', '?')}"
    return StravaRetryable(f"Redis (connection {REDIS_CONN_ID} at {where}) failed while {doing}: "
                           f"{type(exc).__name__}: {exc}")


def _mask(*values) -> None:
    from airflow.sdk.log import mask_secret  # noqa: PLC0415

    for value in values:
        if value:
            mask_secret(str(value))


def load_token(redis_client) -> dict:
    from redis.exceptions import RedisError  # noqa: PLC0415

    failure = None
    try:
        raw = redis_client.get(TOKEN_KEY)
    except RedisError as exc:
        failure = _redis_failure(redis_client, exc, f"reading the token (key {TOKEN_KEY})")
    if failure is not None:
        raise failure
    if raw is None:
        raise StravaRejected(f"Strava token missing: Redis key {TOKEN_KEY} is empty. {BOOTSTRAP_HOWTO}")
    try:
        token = json.loads(raw)
    except ValueError:
        raise StravaRejected(f"Redis key {TOKEN_KEY} does not hold JSON. {BOOTSTRAP_HOWTO}") from None
    if not isinstance(token, dict) or not token.get("refresh_token"):
        raise StravaRejected(f"Redis key {TOKEN_KEY} holds no refresh_token. {BOOTSTRAP_HOWTO}")
    _mask(token.get("access_token"), token.get("refresh_token"))
    return token


def save_token(redis_client, token: dict, attempts: int = 4) -> None:
    """Store the newest token (the refresh token may have rotated: the old one is dead already, so
    a failed write is tried again - 1, 2, 4 s apart - before giving up, loudly)."""
    import time  # noqa: PLC0415

    from redis.exceptions import RedisError  # noqa: PLC0415

    _mask(token.get("access_token"), token.get("refresh_token"))
    kept = {key: token[key] for key in TOKEN_FIELDS if key in token}
    failure = None
    for attempt in range(attempts):
        try:
            redis_client.set(TOKEN_KEY, json.dumps(kept))
            return
        except RedisError as exc:
            failure = _redis_failure(redis_client, exc, f"saving a refreshed token (key {TOKEN_KEY}, try "
                                                         f"{attempt + 1} of {attempts})")
        if attempt + 1 < attempts:
            time.sleep(2 ** attempt)
    raise StravaRejected(f"{failure}. Strava may have rotated the refresh token, which is then lost: if the next "
                         f"run reports a failed refresh, bootstrap again. {BOOTSTRAP_HOWTO}")


def _describe(response) -> str:
    try:
        body = response.json()
        detail = body.get("message", "")
        errors = ", ".join(f"{e.get('resource')}.{e.get('field')} {e.get('code')}" for e in body.get("errors", []))
        return f"{detail} ({errors})" if errors else detail
    except (ValueError, AttributeError):
        return response.text[:200]


def _allow_plain_http_to_local_standins(base_url: str) -> None:
    """oauthlib insists on https; the local stand-ins speak plain http - on 127.0.0.1 (make run),
    or on a host named in OAUTH_PLAIN_HTTP_HOSTS (.env.offline names the compose service)."""
    import os  # noqa: PLC0415
    from urllib.parse import urlsplit  # noqa: PLC0415

    parts = urlsplit(base_url)
    if parts.scheme == "https":
        return
    named = {h.strip() for h in os.environ.get("OAUTH_PLAIN_HTTP_HOSTS", "").split(",") if h.strip()}
    if parts.hostname in {"127.0.0.1", "localhost", "::1"} | named:
        os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"
        return
    raise StravaRejected(f"the `{CONN_ID}` connection points at {base_url}: OAuth tokens travel only over https")


def _rate_limit_failure(response, description: str) -> StravaError:
    """A 429: which of Strava's windows is used up, and when it resets (15-minute windows at :00,
    :15, :30, :45; the day at midnight UTC - developers.strava.com/docs/rate-limits)."""
    headers = response.headers
    usage = headers.get("X-ReadRateLimit-Usage") or headers.get("X-RateLimit-Usage") or ""
    limit = headers.get("X-ReadRateLimit-Limit") or headers.get("X-RateLimit-Limit") or ""
    figures = (f"reads used {usage or '?'} of {limit or '?'} (15 min, day); X-RateLimit-Usage "
               f"{headers.get('X-RateLimit-Usage', '?')} of X-RateLimit-Limit {headers.get('X-RateLimit-Limit', '?')}")
    now = datetime.now(UTC)
    try:
        used_day, max_day = int(usage.split(",")[1]), int(limit.split(",")[1])
    except (ValueError, IndexError):
        used_day = max_day = None
    if used_day is not None and used_day >= max_day:
        midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        return StravaRejected(f"Strava's daily read limit is used up: 429 {description}; {figures}. It resets at "
                              f"{midnight.isoformat()}; the first run after that catches up from the last load.")
    quarter = now.replace(minute=now.minute - now.minute % 15, second=0, microsecond=0) + timedelta(minutes=15)
    return StravaRetryable(f"Strava rate limit exceeded: 429 {description}; {figures}; the 15-minute window "
                           f"resets at {quarter.strftime('%H:%M')} UTC",
                           retry_after=quarter - now + timedelta(seconds=5))


def fetch_activities(after: int, before: int, *, client_id: str, client_secret: str, base_url: str,
                     redis_client, per_page: int = PER_PAGE) -> list[dict]:
    """Every activity that started in (after, before) epoch seconds, all pages, raw JSON dicts.

    An expired token is refreshed before the call (requests-oauthlib, the new token saved to Redis
    first). A 401 on a token that had not expired (revoked, or issued by a server that forgot it)
    gets one refresh and one more try; a second 401 fails, saying whether a refresh happened."""
    import requests  # noqa: PLC0415 - keep DAG parsing light
    from oauthlib.oauth2.rfc6749.errors import OAuth2Error  # noqa: PLC0415
    from requests_oauthlib import OAuth2Session  # noqa: PLC0415

    _mask(client_secret)
    require_credentials(client_id, client_secret)
    _allow_plain_http_to_local_standins(base_url)
    token = load_token(redis_client)
    refreshed = []

    def updated(new_token: dict) -> None:
        save_token(redis_client, new_token)
        refreshed.append(True)

    session = OAuth2Session(
        client_id,
        token=token,
        auto_refresh_url=base_url + TOKEN_PATH,
        auto_refresh_kwargs={"client_id": client_id, "client_secret": client_secret},
        token_updater=updated,
    )

    def refresh_failure(exc: OAuth2Error) -> StravaRejected:
        return StravaRejected(
            f"Strava token refresh failed at {TOKEN_PATH}: {type(exc).__name__} "
            f"({exc.description or exc.error}). The stored refresh token no longer works. {BOOTSTRAP_HOWTO}")

    activities: list[dict] = []
    page = 1
    retried_401 = False
    while True:
        failure: StravaError | None = None
        try:
            response = session.get(base_url + ACTIVITIES_PATH, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
                                   params={"after": after, "before": before, "page": page, "per_page": per_page})
        except OAuth2Error as exc:
            failure = refresh_failure(exc)
        except requests.RequestException as exc:
            failure = StravaRetryable(f"Strava unreachable at {base_url}: {type(exc).__name__}")
        if failure is not None:
            raise failure  # outside `except`: no chained traceback holding tokens
        if response.status_code == 401 and not refreshed and not retried_401:
            # The access token had not expired, yet Strava refused it: revoked, or unknown to the
            # server. A refresh may still work; try once.
            retried_401 = True
            try:
                updated(session.refresh_token(base_url + TOKEN_PATH, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S)))
            except OAuth2Error as exc:
                failure = StravaRejected(
                    f"Strava rejected the stored access token (401 {_describe(response)}) before it expired, and "
                    f"refreshing it failed too: {type(exc).__name__} ({exc.description or exc.error}). "
                    f"{BOOTSTRAP_HOWTO}")
            except requests.RequestException as exc:
                failure = StravaRetryable(f"Strava unreachable at {base_url}: {type(exc).__name__}")
            if failure is not None:
                raise failure
            continue
        if response.status_code == 401:
            how = "after a refresh" if refreshed else "and no refresh was possible"
            raise StravaRejected(f"Strava rejected the access token {how}: 401 {_describe(response)}. "
                                 f"Check the app's scope (activity:read_all). {BOOTSTRAP_HOWTO}")
        if response.status_code == 429:
            raise _rate_limit_failure(response, _describe(response))
        if response.status_code >= 500:
            raise StravaRetryable(f"Strava server error {response.status_code}: {_describe(response)}")
        if response.status_code != 200:
            raise StravaRejected(f"Strava answered {response.status_code}: {_describe(response)}")
        batch, problem = parse_json_body(response.content)
        if problem is not None and problem[0] == "cut":  # the server's or the line's trouble: retried
            raise StravaRetryable(f"Strava's answer for page {page} broke off: {problem[1]}")
        if problem is not None:
            raise StravaRejected(f"Strava returned malformed JSON for page {page} ({len(response.content)} bytes)")
        if not isinstance(batch, list):
            raise StravaRejected(f"Strava returned {type(batch).__name__} instead of a list for page {page}")
        activities.extend(batch)
        if len(batch) < per_page:  # a short page is the last one: no need to spend a read on an empty one
            return activities
        page += 1


class StravaRetryPolicy(RetryPolicy):
    """Back off on rate limits and outages (Strava's window is 15 minutes); fail the rest."""

    def evaluate(self, exception, try_number, max_tries, context=None):  # noqa: D102 - RetryPolicy API
        if isinstance(exception, StravaRetryable):
            delay = exception.retry_after or min(timedelta(minutes=1) * 2 ** max(try_number - 1, 0),
                                                 timedelta(minutes=15))
            return RetryDecision(action=RetryAction.RETRY, retry_delay=delay, reason="Strava limits or outage")
        if isinstance(exception, StravaError):
            return RetryDecision(action=RetryAction.FAIL, reason="Strava error that retrying cannot fix")
        return RetryDecision(action=RetryAction.DEFAULT)


def raw_key(dag_run) -> str:
    return f"stravaact/{run_stamp(dag_run)}.json"


def write_raw_activities(activities: list[dict], dag_run, bucket: str = RAW_BUCKET,
                         conn_id: str = "aws_default") -> str:
    """Strava's answer as it came, one object per run: s3://lifedata/stravaact/<ts_nodash>.json."""
    from include.object_storage import write_object  # noqa: PLC0415

    key = raw_key(dag_run)
    write_object(json.dumps(activities, ensure_ascii=False), bucket, key, conn_id)
    return key


def read_raw_activities(key: str, bucket: str = RAW_BUCKET, conn_id: str = "aws_default") -> list:
    from include.object_storage import read_text  # noqa: PLC0415

    return json.loads(read_text(bucket, key, conn_id))


def validate_activities(raw: list) -> list[StravaActivity]:
    """All records valid, or StravaRejected naming each bad record's id and fields."""
    valid, problems = [], []
    for position, record in enumerate(raw):
        try:
            valid.append(StravaActivity.model_validate(record))
        except ValidationError as exc:
            ident = record.get("id", f"#{position}") if isinstance(record, dict) else f"#{position}"
            fields = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'record'}: {e['msg']}" for e in exc.errors())
            problems.append(f"activity {ident}: {fields}")
    if problems:
        raise StravaRejected(f"{len(problems)} of {len(raw)} Strava activities are invalid, nothing was loaded: "
                             + " | ".join(problems))
    return valid


def read_watermark(conn_id: str = "warehouse_db") -> datetime | None:
    """The `before` bound of the last successful load (None before the first one)."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook  # noqa: PLC0415

    from include.warehouse import apply_ddl  # noqa: PLC0415

    conn = PostgresHook(postgres_conn_id=conn_id).get_conn()
    try:
        apply_ddl(conn, "strava_sync_state")
        with conn.cursor() as cur:
            cur.execute("SELECT synced_until FROM strava_sync_state WHERE stream = %s", [SYNC_STREAM])
            row = cur.fetchone()
        conn.rollback()
    finally:
        conn.close()
    return row[0] if row else None


def sync_window(interval_end: datetime | None, watermark: datetime | None, full_history: bool = False,
                lookback: timedelta = LOOKBACK) -> tuple[int, int]:
    """(after, before) epoch seconds a run reads (see the module docstring): up to its data
    interval end, from LOOKBACK before the earlier of the watermark and that end - or from the
    epoch on the first load, on the daily sweep and with full_history."""
    _, end = require_data_interval(interval_end, interval_end)
    before = int(end.timestamp())
    if full_history or watermark is None or end.astimezone(UTC).hour == FULL_SYNC_HOUR_UTC:
        return 0, before
    return max(int((min(watermark, end) - lookback).timestamp()), 0), before


def window_extra(after: int, before: int) -> dict:
    """The sync window (epoch seconds, both exclusive) as asset-event extra, in UTC ISO 8601."""
    return {"window_after": datetime.fromtimestamp(after, UTC).isoformat(),
            "window_before": datetime.fromtimestamp(before, UTC).isoformat()}


STAGED_TABLE = "strava_activity_staged"


def stage_activities(activities: list[StravaActivity], raw_key: str, conn_id: str = "warehouse_db") -> dict:
    """Put a raw object's validated activities into strava_activity_staged under its key, replacing
    what an earlier try staged for it, in one transaction. Readers of strava_activity see nothing
    yet: the checks run on the staged rows and publish_activities moves them."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook  # noqa: PLC0415

    from include.warehouse import apply_ddl, read_sql, transaction  # noqa: PLC0415

    rows = [{**activity.model_dump(), "raw_key": raw_key} for activity in activities]
    conn = PostgresHook(postgres_conn_id=conn_id).get_conn()
    try:
        apply_ddl(conn, "strava_activity")
        apply_ddl(conn, "strava_sync_state")
        with transaction(conn), conn.cursor() as cur:
            cur.execute(f"DELETE FROM {STAGED_TABLE} WHERE raw_key = %s", [raw_key])  # noqa: S608 - a constant
            cur.executemany(read_sql("strava_activity/stage.sql"), rows)  # psycopg 3: pipelined
    finally:
        conn.close()
    return {"staged_table": STAGED_TABLE, "staged": len({row["id"] for row in rows})}


def publish_activities(raw_key: str, after: int, before: int, conn_id: str = "warehouse_db") -> dict:
    """In one transaction: upsert the raw object's checked activities from the stage into
    strava_activity on id, delete the rows that started in the window (after, before) but Strava no
    longer lists (deleted, or made private), move the watermark to `before` and clear the stage of
    that object. Returns counts."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook  # noqa: PLC0415

    from include.warehouse import read_sql, transaction  # noqa: PLC0415

    params = {"raw_key": raw_key, "after": after, "before": before}
    conn = PostgresHook(postgres_conn_id=conn_id).get_conn()
    try:
        with transaction(conn), conn.cursor() as cur:
            cur.execute(read_sql("strava_activity/publish_upsert.sql"), params)
            upserted = cur.rowcount
            cur.execute(read_sql("strava_activity/delete_unlisted.sql"), params)
            deleted = cur.rowcount
            cur.execute(read_sql("strava_sync_state/advance.sql"), {"stream": SYNC_STREAM, "before": before})
            cur.execute(f"DELETE FROM {STAGED_TABLE} WHERE raw_key = %s", [raw_key])  # noqa: S608 - a constant
    finally:
        conn.close()
    return {"upserted": upserted, "deleted": deleted}


def exchange_authorization_code(code: str, client_id: str, client_secret: str, base_url: str) -> dict:
    """First token from an authorization code (the bootstrap)."""
    import requests  # noqa: PLC0415

    response = requests.post(base_url + TOKEN_PATH, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S), data={
        "client_id": client_id, "client_secret": client_secret, "code": code, "grant_type": "authorization_code"})
    if response.status_code != 200:
        raise StravaRejected(f"Strava refused the authorization code: {response.status_code} {_describe(response)}")
    token = response.json()
    if not token.get("access_token") or not token.get("refresh_token"):
        raise StravaRejected("Strava's token answer lacks access_token or refresh_token")
    return token


