"""Strava stand-in: OAuth token endpoint (`/oauth/token`) and `/api/v3/athlete/activities`.

- The OAuth app is `strava_client_id` / `strava_client_secret` (settings; defaults
  `offline-client` / `offline-client-secret`). `grant_type=authorization_code` with code
  `strava_authorization_code` (default `offline-authorization-code`) issues a first token;
  `grant_type=refresh_token` issues a new access token AND a new refresh token - the old refresh
  token stops working at once (Strava may rotate it on any refresh: whoever loses the newest one
  is locked out). Access tokens live `strava_token_lifetime_s` (6 h).
- Issued tokens survive a restart of the stand-in when it has a state folder (`--state-dir`):
  the real Strava does not forget the tokens it issued, and Redis keeps the pipeline's copy.
- Activities are deterministic: one every ~31 hours from 2024-01-01, ids beyond 32 bits, float
  distances and speeds, unicode names, optional fields (`average_cadence`, `average_heartrate`,
  `weighted_average_watts`, `kilojoules`) absent on some. `after`/`before` (epoch seconds) filter
  on the START time, `page`, `per_page` (default 30, max 200) behave as Strava's: newest first,
  oldest first when only `after` is given (developers.strava.com/docs/reference, "List Athlete
  Activities").
- Upload lag: an activity is listed only once it has been uploaded - after it ends, minutes later
  from a phone, hours or days later from a watch that syncs late (api-facts; Strava's upload
  docs: an activity is created by its upload). Most appear 2-30 min after their end, some 1-12 h,
  one in ten 1-4 days later (`uploaded_at(index)`). The stand-in's clock is the setting
  `strava_now` (ISO 8601; null: real time), so tests can step through an upload.
- Edits and deletions after upload: `strava_activity_overrides` {id: {field: value}} edits
  activities (a new name, a corrected distance), `strava_deleted_ids` [id, ...] deletes them.
- Rate limits as documented (developers.strava.com/docs/rate-limits): per application, reads
  ("non-upload" requests) `strava_read_limit` "100,1000" and all requests `strava_overall_limit`
  "200,2000" per 15 minutes and per day; the 15-minute windows reset at :00, :15, :30 and :45, the
  daily one at midnight UTC; a request over a limit is answered 429 and still counts toward the
  daily usage. Every API answer carries X-RateLimit-Limit/-Usage and X-ReadRateLimit-Limit/-Usage.
- Errors with Strava's bodies: 401 (bad or expired token), 400 on a bad refresh, 429, 5xx.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs

from devstack.standins.messages import Response

NAME = "strava"
PREFIXES = ("/oauth/token", "/api/v3/")
DEFAULT_CONFIG = {
    "strava_client_id": "offline-client",
    "strava_client_secret": "offline-client-secret",
    "strava_authorization_code": "offline-authorization-code",
    "strava_token_lifetime_s": 21600,
    "strava_activity_overrides": {},
    "strava_deleted_ids": [],
    "strava_now": None,
    "strava_read_limit": "100,1000",
    "strava_overall_limit": "200,2000",
}
FIRST_ACTIVITY = datetime(2024, 1, 1, 6, 30, tzinfo=UTC)
ACTIVITY_EVERY = timedelta(hours=31)
SPORTS = [("Run", "Morning Run"), ("Ride", "Évening Ride 🚴"), ("Swim", "Piscine à Żoliborz"), ("Walk", "Spaziergang"),
          ("Hike", "山歩き"), ("Ride", "Commute")]
_lock = threading.Lock()


def _limits(config: dict, name: str) -> tuple[int, int]:
    quarter, day = str(config.get(name) or DEFAULT_CONFIG[name]).split(",")
    return int(quarter), int(day)


def _json(status: int, payload, usage: dict | None = None, config: dict | None = None):
    """Strava's JSON answer; API answers carry the rate-limit headers (usage: counts this window)."""
    headers = {}
    if usage is not None:
        config = config or DEFAULT_CONFIG
        overall, read = _limits(config, "strava_overall_limit"), _limits(config, "strava_read_limit")
        headers = {"X-RateLimit-Limit": f"{overall[0]},{overall[1]}",
                   "X-RateLimit-Usage": f"{usage['quarter']},{usage['day']}",
                   "X-ReadRateLimit-Limit": f"{read[0]},{read[1]}",
                   "X-ReadRateLimit-Usage": f"{usage['quarter']},{usage['day']}"}
    return Response.json(status, payload, headers)


def _fault_body(status: int) -> dict:
    if status == 401:
        return {"message": "Authorization Error",
                "errors": [{"resource": "Athlete", "field": "access_token", "code": "invalid"}]}
    if status == 429:
        return {"message": "Rate Limit Exceeded",
                "errors": [{"resource": "Application", "field": "rate limit", "code": "exceeded"}]}
    if status == 400:
        return {"message": "Bad Request", "errors": [{"resource": "RefreshToken", "field": "refresh_token",
                                                      "code": "invalid"}]}
    return {"message": "Internal Server Error", "errors": []}


def error(status: int):
    """Fault `http_<status>`: Strava's error body; a 429 reports the 15-minute read limit used up."""
    return _json(status, _fault_body(status), {"quarter": 101 if status == 429 else 12, "day": 312})


def _noise(*key) -> float:
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def activity(index: int, overrides: dict | None = None) -> dict:
    """The index-th activity, always the same."""
    sport, title = SPORTS[index % len(SPORTS)]
    start = start_of(index)
    moving = 900 + int(_noise("t", index) * 5400)
    speed = {"Run": 3.1, "Ride": 7.4, "Swim": 0.9, "Walk": 1.4, "Hike": 1.2}[sport] * (0.8 + 0.4 * _noise("s", index))
    record = {
        "resource_state": 2,
        "athlete": {"id": 134815, "resource_state": 1},
        "name": f"{title} #{index}",
        "distance": round(speed * moving, 1),
        "moving_time": moving,
        "elapsed_time": moving + int(_noise("e", index) * 600),
        "total_elevation_gain": round(_noise("g", index) * 250, 1),
        "type": sport,
        "sport_type": sport,
        "id": 10_000_000_000 + index * 7919,
        "start_date": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "start_date_local": (start - timedelta(hours=5)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "timezone": "(GMT-05:00) America/New_York",
        "average_speed": round(speed, 3),
        "max_speed": round(speed * (1.3 + 0.5 * _noise("x", index)), 3),
        "has_heartrate": index % 3 != 0,
        "private": False,
        "upload_id": 20_000_000_000 + index * 104_729,
    }
    if record["has_heartrate"]:
        record["average_heartrate"] = round(120 + 40 * _noise("h", index), 1)
    if sport in ("Run", "Walk", "Hike"):
        record["average_cadence"] = round(75 + 15 * _noise("c", index), 1)
    if sport == "Ride":
        record["weighted_average_watts"] = 120 + int(_noise("w", index) * 140)
        record["kilojoules"] = round(record["weighted_average_watts"] * moving / 1000, 1)
    record.update((overrides or {}).get(str(record["id"]), {}))
    return record


def start_of(index: int) -> datetime:
    return FIRST_ACTIVITY + ACTIVITY_EVERY * index + timedelta(minutes=int(_noise("m", index) * 50))


def uploaded_at(index: int) -> datetime:
    """When the index-th activity reaches Strava: its end plus the device's sync lag."""
    record = activity(index)
    end = start_of(index) + timedelta(seconds=record["elapsed_time"])
    draw = _noise("upload", index)
    if draw < 0.7:
        lag = timedelta(minutes=2 + 28 * _noise("lag", index))  # phone app: minutes
    elif draw < 0.9:
        lag = timedelta(hours=1 + 11 * _noise("lag", index))  # watch synced later that day
    else:
        lag = timedelta(days=1 + 3 * _noise("lag", index))  # watch synced days later
    return end + lag


def clock(config: dict) -> datetime:
    """The stand-in's now: the `strava_now` setting, else real time."""
    configured = (config or {}).get("strava_now")
    if not configured:
        return datetime.now(UTC)
    moment = datetime.fromisoformat(configured)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def listed_activities(now: datetime, config: dict | None = None) -> list[dict]:
    """What the API lists at `now`: uploaded by then, not deleted, with the edits made so far,
    oldest first."""
    config = config or {}
    deleted = {int(i) for i in config.get("strava_deleted_ids") or []}
    overrides = config.get("strava_activity_overrides") or {}
    started = int((now - FIRST_ACTIVITY) / ACTIVITY_EVERY) + 1
    return [activity(i, overrides) for i in range(max(started, 0))
            if uploaded_at(i) <= now and activity(i)["id"] not in deleted]


def _count_request(state: dict, config: dict) -> tuple[dict, bool]:
    """Count one read against the 15-minute and daily windows (real time: the windows are
    Strava's, not the activity clock's); True when it is over a limit (it still counts)."""
    now = time.time()
    quarter_window, day_window = int(now // 900), int(now // 86400)
    with _lock:
        if state.get("quarter_window") != quarter_window:
            state["quarter_window"], state["quarter"] = quarter_window, 0
        if state.get("day_window") != day_window:
            state["day_window"], state["day"] = day_window, 0
        state["quarter"] += 1
        state["day"] += 1
        usage = {"quarter": state["quarter"], "day": state["day"]}
    read, overall = _limits(config, "strava_read_limit"), _limits(config, "strava_overall_limit")
    over = usage["quarter"] > min(read[0], overall[0]) or usage["day"] > min(read[1], overall[1])
    return usage, over


def handle(request):
    state = request.state
    _load_tokens(state, request.state_dir)
    if request.path.startswith("/oauth/token"):
        return _token(request, state)
    usage, over = _count_request(state, request.config)
    if over:
        return _json(429, _fault_body(429), usage, request.config)
    if request.path.rstrip("/") == "/api/v3/athlete/activities":
        return _activities(request, state, usage)
    return _json(404, {"message": "Record Not Found", "errors": [{"resource": "resource", "field": "path",
                                                                  "code": "invalid"}]}, usage, request.config)


def _load_tokens(state: dict, state_dir) -> None:
    """Once per process: the tokens issued before a restart, from the state folder."""
    with _lock:
        if state.get("tokens_loaded"):
            return
        state["tokens_loaded"] = True
        state["state_dir"] = state_dir
        path = state_dir / "tokens.json" if state_dir else None
        if path is not None and path.exists():
            saved = json.loads(path.read_text())
            state["access"] = {token: int(expiry) for token, expiry in saved.get("access", {}).items()}
            state["refresh"] = saved.get("refresh")


def _save_tokens(state: dict) -> None:
    """Write-then-rename, so a crash never leaves half a token file; expired access tokens go."""
    state_dir = state.get("state_dir")
    if state_dir is None:
        return
    state_dir.mkdir(parents=True, exist_ok=True)
    now = time.time()
    state["access"] = {token: expiry for token, expiry in state.get("access", {}).items() if expiry > now}
    tmp = state_dir / f".tokens.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"access": state["access"], "refresh": state.get("refresh")}))
    tmp.chmod(0o600)
    os.replace(tmp, state_dir / "tokens.json")


def _form(request) -> dict:
    body = request.body.decode() if request.body else ""
    form = {k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()}
    return {**request.query, **form}


def _issue(state: dict, config: dict) -> dict:
    access, refresh = secrets.token_hex(20), secrets.token_hex(20)
    expires_at = int(time.time()) + int(config["strava_token_lifetime_s"])
    with _lock:
        state.setdefault("access", {})[access] = expires_at
        state["refresh"] = refresh  # rotation: only the newest refresh token is valid
        _save_tokens(state)
    return {"token_type": "Bearer", "access_token": access, "expires_at": expires_at,
            "expires_in": int(config["strava_token_lifetime_s"]), "refresh_token": refresh}


def _token(request, state):
    config = request.config
    if request.method != "POST":
        return _json(405, {"message": "Method Not Allowed", "errors": []})
    form = _form(request)
    if form.get("client_id") != str(config["strava_client_id"]) or \
            form.get("client_secret") != str(config["strava_client_secret"]):
        return _json(401, {"message": "Bad Request", "errors": [{"resource": "Application", "field": "client_id",
                                                                 "code": "invalid"}]})
    grant = form.get("grant_type")
    if grant == "authorization_code":
        if form.get("code") != config["strava_authorization_code"]:
            return _json(400, {"message": "Bad Request", "errors": [{"resource": "AuthorizationCode",
                                                                     "field": "code", "code": "invalid"}]})
        token = _issue(state, config)
        token["athlete"] = {"id": 134815, "username": "offline_athlete", "firstname": "Offline", "lastname": "Athlete"}
        return _json(200, token)
    if grant == "refresh_token":
        if not form.get("refresh_token") or form.get("refresh_token") != state.get("refresh"):
            return _json(400, _fault_body(400))
        return _json(200, _issue(state, config))
    return _json(400, {"message": "Bad Request", "errors": [{"resource": "Application", "field": "grant_type",
                                                             "code": "invalid"}]})


def _int_param(query: dict, name: str, default: int | None) -> int | None:
    if name not in query or query[name] == "":
        return default
    try:
        return int(float(query[name]))
    except ValueError:
        raise ValueError(name) from None


def _activities(request, state, usage):
    def answer(status, payload):
        return _json(status, payload, usage, request.config)

    auth = request.headers.get("Authorization", "")
    token = auth.removeprefix("Bearer ").strip()
    expires_at = state.get("access", {}).get(token)
    if not token or expires_at is None or expires_at <= time.time():
        return answer(401, _fault_body(401))
    query = request.query
    try:
        after = _int_param(query, "after", None)
        before = _int_param(query, "before", None)
        page = _int_param(query, "page", 1)
        per_page = min(_int_param(query, "per_page", 30), 200)
    except ValueError as exc:
        return answer(400, {"message": "Bad Request", "errors": [{"resource": "Application", "field": str(exc),
                                                                  "code": "invalid"}]})
    items = listed_activities(clock(request.config), request.config)

    def epoch(a):
        return int(datetime.strptime(a["start_date"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp())

    if after is not None:
        items = [a for a in items if epoch(a) > after]
    if before is not None:
        items = [a for a in items if epoch(a) < before]
    if not (after is not None and before is None):
        items.reverse()  # newest first, unless only `after` is given
    start = (max(page, 1) - 1) * per_page
    payload = items[start:start + per_page]
    if request.fault == "invalid_record" and payload:
        payload[0] = {**payload[0], "distance": "far", "start_date": None}
    return answer(200, payload)
