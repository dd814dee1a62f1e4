"""Strava: OAuth2 token kept in Redis, activities of a data interval, validation, warehouse upsert.

Token handling follows Strava's rules: access tokens live 6 hours and the refresh token may change
on every refresh, so every new token is written to Redis (key STRAVA_TOKEN) before it is used -
losing the newest refresh token locks the athlete out. The client secret and both tokens are
registered with Airflow's secrets masker and never put into messages.

Invalid records fail the load: the error lists every bad record by id and field and nothing is
written (one transaction). A silently skipped activity would be a silent hole in the data.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime

from airflow.sdk import RetryAction, RetryDecision, RetryPolicy
from airflow.sdk.exceptions import AirflowFailException
from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError

from include.http_api import CONNECT_TIMEOUT_S, READ_TIMEOUT_S
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
BOOTSTRAP_HOWTO = (
    "Put a first token into Redis: `make strava-token CODE=<authorization code>` (exchanges an "
    "authorization code from https://www.strava.com/oauth/authorize) or `make strava-token "
    "TOKEN_FILE=<token.json>` - see README, 'Strava setup'."
)
TOKEN_FIELDS = ("token_type", "access_token", "refresh_token", "expires_at", "expires_in", "scope")

# requests-oauthlib logs the refresh request's body (client secret included) at DEBUG.
for _name in ("requests_oauthlib", "oauthlib"):
    logging.getLogger(_name).setLevel(logging.WARNING)


class StravaError(RuntimeError):
    """Strava gave no usable answer."""


class StravaRetryable(StravaError):
    """Rate limited (429) or server/network trouble: retried with backoff."""


class StravaRejected(StravaError, AirflowFailException):
    """Bad token, failed refresh, malformed answer, invalid records: fails at once."""


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


def redis_client(conn_id: str = REDIS_CONN_ID):
    """The token store, through RedisHook and the `redis_default` connection."""
    from airflow.providers.redis.hooks.redis import RedisHook  # noqa: PLC0415

    return RedisHook(redis_conn_id=conn_id).get_conn()


def _mask(*values) -> None:
    from airflow.sdk.log import mask_secret  # noqa: PLC0415

    for value in values:
        if value:
            mask_secret(str(value))


def load_token(redis_client) -> dict:
    raw = redis_client.get(TOKEN_KEY)
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


def save_token(redis_client, token: dict) -> None:
    """Store the newest token (the refresh token may have rotated)."""
    _mask(token.get("access_token"), token.get("refresh_token"))
    kept = {key: token[key] for key in TOKEN_FIELDS if key in token}
    redis_client.set(TOKEN_KEY, json.dumps(kept))


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


def fetch_activities(after: int, before: int, *, client_id: str, client_secret: str, base_url: str,
                     redis_client, per_page: int = PER_PAGE) -> list[dict]:
    """Every activity that started in (after, before) epoch seconds, all pages, raw JSON dicts."""
    import requests  # noqa: PLC0415 - keep DAG parsing light
    from oauthlib.oauth2.rfc6749.errors import OAuth2Error  # noqa: PLC0415
    from requests_oauthlib import OAuth2Session  # noqa: PLC0415

    _mask(client_secret)
    _allow_plain_http_to_local_standins(base_url)
    token = load_token(redis_client)
    session = OAuth2Session(
        client_id,
        token=token,
        auto_refresh_url=base_url + TOKEN_PATH,
        auto_refresh_kwargs={"client_id": client_id, "client_secret": client_secret},
        token_updater=lambda new_token: save_token(redis_client, new_token),
    )
    activities: list[dict] = []
    page = 1
    while True:
        failure: StravaError | None = None
        try:
            response = session.get(base_url + ACTIVITIES_PATH, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
                                   params={"after": after, "before": before, "page": page, "per_page": per_page})
        except OAuth2Error as exc:
            failure = StravaRejected(
                f"Strava token refresh failed at {TOKEN_PATH}: {type(exc).__name__} "
                f"({exc.description or exc.error}). The stored refresh token no longer works. {BOOTSTRAP_HOWTO}")
        except requests.RequestException as exc:
            failure = StravaRetryable(f"Strava unreachable at {base_url}: {type(exc).__name__}")
        if failure is not None:
            raise failure  # outside `except`: no chained traceback holding tokens
        limits = (f"X-RateLimit-Usage {response.headers.get('X-RateLimit-Usage', '?')} of "
                  f"X-RateLimit-Limit {response.headers.get('X-RateLimit-Limit', '?')} (15 min, day)")
        if response.status_code == 401:
            raise StravaRejected(f"Strava rejected the access token after refresh: 401 {_describe(response)}. "
                                 f"Check the app's scope (activity:read_all). {BOOTSTRAP_HOWTO}")
        if response.status_code == 429:
            raise StravaRetryable(f"Strava rate limit exceeded: 429 {_describe(response)}; {limits}")
        if response.status_code >= 500:
            raise StravaRetryable(f"Strava server error {response.status_code}: {_describe(response)}")
        if response.status_code != 200:
            raise StravaRejected(f"Strava answered {response.status_code}: {_describe(response)}")
        try:
            batch = response.json()
        except ValueError:
            raise StravaRejected(
                f"Strava returned malformed JSON for page {page} ({len(response.content)} bytes)") from None
        if not isinstance(batch, list):
            raise StravaRejected(f"Strava returned {type(batch).__name__} instead of a list for page {page}")
        if not batch:
            return activities
        activities.extend(batch)
        page += 1


class StravaRetryPolicy(RetryPolicy):
    """Back off on rate limits and outages (Strava's window is 15 minutes); fail the rest."""

    def evaluate(self, exception, try_number, max_tries, context=None):  # noqa: D102 - RetryPolicy API
        from datetime import timedelta  # noqa: PLC0415

        if isinstance(exception, StravaRetryable):
            delay = min(timedelta(minutes=1) * 2 ** max(try_number - 1, 0), timedelta(minutes=15))
            return RetryDecision(action=RetryAction.RETRY, retry_delay=delay, reason="Strava limits or outage")
        if isinstance(exception, StravaError):
            return RetryDecision(action=RetryAction.FAIL, reason="Strava error that retrying cannot fix")
        return RetryDecision(action=RetryAction.DEFAULT)


def raw_key(dag_run) -> str:
    return f"stravaact/{run_stamp(dag_run)}.json"


def write_raw_activities(activities: list[dict], dag_run, bucket: str = RAW_BUCKET,
                         conn_id: str = "aws_default") -> str:
    """Strava's answer as it came, one object per run: s3://lifedata/stravaact/<ts_nodash>.json."""
    from airflow.sdk import ObjectStoragePath  # noqa: PLC0415

    key = raw_key(dag_run)
    ObjectStoragePath(f"s3://{conn_id}@{bucket}/{key}").write_text(json.dumps(activities, ensure_ascii=False))
    return key


def read_raw_activities(key: str, bucket: str = RAW_BUCKET, conn_id: str = "aws_default") -> list:
    from airflow.sdk import ObjectStoragePath  # noqa: PLC0415

    return json.loads(ObjectStoragePath(f"s3://{conn_id}@{bucket}/{key}").read_text())


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


def upsert_activities(activities: list[StravaActivity], conn_id: str = "warehouse_db") -> int:
    """Create strava_activity if needed and upsert every activity on id, in one transaction."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook  # noqa: PLC0415

    from include.warehouse import migrations, read_sql  # noqa: PLC0415

    rows = [activity.model_dump() for activity in activities]
    conn = PostgresHook(postgres_conn_id=conn_id).get_conn()
    try:
        with conn, conn.cursor() as cur:
            for ddl in migrations("strava_activity"):
                cur.execute(ddl)
            cur.executemany(read_sql("strava_activity/upsert.sql"), rows)  # psycopg 3: pipelined
    finally:
        conn.close()
    return len(rows)


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


def interval_bounds(start: datetime, end: datetime, full_history: bool = False) -> tuple[int, int]:
    """(after, before) epoch seconds for a data interval; full history starts at the epoch."""
    start, end = require_data_interval(start, end)
    return (0 if full_history else int(start.timestamp())), int(end.timestamp())
