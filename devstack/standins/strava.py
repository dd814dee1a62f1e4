"""Strava stand-in: OAuth token endpoint (`/oauth/token`) and `/api/v3/athlete/activities`.

- The OAuth app is `strava_client_id` / `strava_client_secret` (settings; defaults
  `offline-client` / `offline-client-secret`). `grant_type=authorization_code` with code
  `strava_authorization_code` (default `offline-authorization-code`) issues a first token;
  `grant_type=refresh_token` issues a new access token AND a new refresh token - the old refresh
  token stops working at once (Strava may rotate it on any refresh: whoever loses the newest one
  is locked out). Access tokens live `strava_token_lifetime_s` (6 h).
- Activities are deterministic: one every ~31 hours from 2024-01-01 until now, ids beyond 32 bits,
  float distances and speeds, unicode names, optional fields (`average_cadence`,
  `average_heartrate`, `weighted_average_watts`, `kilojoules`) absent on some. `after`/`before`
  (epoch seconds), `page`, `per_page` (default 30, max 200) behave as Strava's: newest first,
  oldest first when only `after` is given. Setting `strava_activity_overrides` {id: {field: value}}
  edits activities (tests use it to change a name).
- Errors with Strava's bodies: 401 (bad or expired token), 400 on a bad refresh, 429 with
  X-RateLimit-* headers, 5xx. Every answer carries X-RateLimit-Limit / X-RateLimit-Usage.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs

NAME = "strava"
PREFIXES = ("/oauth/token", "/api/v3/")
DEFAULT_CONFIG = {
    "strava_client_id": "offline-client",
    "strava_client_secret": "offline-client-secret",
    "strava_authorization_code": "offline-authorization-code",
    "strava_token_lifetime_s": 21600,
    "strava_activity_overrides": {},
}
FIRST_ACTIVITY = datetime(2024, 1, 1, 6, 30, tzinfo=UTC)
ACTIVITY_EVERY = timedelta(hours=31)
LIMITS = "200,2000"
SPORTS = [("Run", "Morning Run"), ("Ride", "Évening Ride 🚴"), ("Swim", "Piscine à Żoliborz"), ("Walk", "Spaziergang"),
          ("Hike", "山歩き"), ("Ride", "Commute")]
_lock = threading.Lock()


def _response():
    from devstack.standins.server import Response  # noqa: PLC0415 - avoid an import cycle

    return Response


def _usage(state: dict) -> str:
    return f"{state.get('used_15min', 0)},{state.get('used_day', 0)}"


def _json(status: int, payload, state: dict | None = None):
    headers = {"X-RateLimit-Limit": LIMITS, "X-ReadRateLimit-Limit": "100,1000"}
    if state is not None:
        headers["X-RateLimit-Usage"] = _usage(state)
        headers["X-ReadRateLimit-Usage"] = _usage(state)
    return _response().json(status, payload, headers)


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
    return _json(status, _fault_body(status), {"used_15min": 201 if status == 429 else 12, "used_day": 312})


def _noise(*key) -> float:
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def activity(index: int, overrides: dict | None = None) -> dict:
    """The index-th activity, always the same."""
    sport, title = SPORTS[index % len(SPORTS)]
    start = FIRST_ACTIVITY + ACTIVITY_EVERY * index + timedelta(minutes=int(_noise("m", index) * 50))
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


def _all_activities(now: datetime, overrides: dict) -> list[dict]:
    count = int((now - FIRST_ACTIVITY) / ACTIVITY_EVERY) + 1
    return [activity(i, overrides) for i in range(max(count, 0))]


def handle(request):
    state = request.state
    with _lock:
        state["used_15min"] = state.get("used_15min", 0) + 1
        state["used_day"] = state.get("used_day", 0) + 1
    if request.path.startswith("/oauth/token"):
        return _token(request, state)
    if request.path.rstrip("/") == "/api/v3/athlete/activities":
        return _activities(request, state)
    return _json(404, {"message": "Record Not Found", "errors": [{"resource": "resource", "field": "path",
                                                                  "code": "invalid"}]}, state)


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
    return {"token_type": "Bearer", "access_token": access, "expires_at": expires_at,
            "expires_in": int(config["strava_token_lifetime_s"]), "refresh_token": refresh}


def _token(request, state):
    config = request.config
    if request.method != "POST":
        return _json(405, {"message": "Method Not Allowed", "errors": []}, state)
    form = _form(request)
    if form.get("client_id") != str(config["strava_client_id"]) or \
            form.get("client_secret") != str(config["strava_client_secret"]):
        return _json(401, {"message": "Bad Request", "errors": [{"resource": "Application", "field": "client_id",
                                                                 "code": "invalid"}]}, state)
    grant = form.get("grant_type")
    if grant == "authorization_code":
        if form.get("code") != config["strava_authorization_code"]:
            return _json(400, {"message": "Bad Request", "errors": [{"resource": "AuthorizationCode",
                                                                     "field": "code", "code": "invalid"}]}, state)
        token = _issue(state, config)
        token["athlete"] = {"id": 134815, "username": "offline_athlete", "firstname": "Offline", "lastname": "Athlete"}
        return _json(200, token, state)
    if grant == "refresh_token":
        if not form.get("refresh_token") or form.get("refresh_token") != state.get("refresh"):
            return _json(400, _fault_body(400), state)
        return _json(200, _issue(state, config), state)
    return _json(400, {"message": "Bad Request", "errors": [{"resource": "Application", "field": "grant_type",
                                                             "code": "invalid"}]}, state)


def _int_param(query: dict, name: str, default: int | None) -> int | None:
    if name not in query or query[name] == "":
        return default
    try:
        return int(float(query[name]))
    except ValueError:
        raise ValueError(name) from None


def _activities(request, state):
    auth = request.headers.get("Authorization", "")
    token = auth.removeprefix("Bearer ").strip()
    expires_at = state.get("access", {}).get(token)
    if not token or expires_at is None or expires_at <= time.time():
        return _json(401, _fault_body(401), state)
    query = request.query
    try:
        after = _int_param(query, "after", None)
        before = _int_param(query, "before", None)
        page = _int_param(query, "page", 1)
        per_page = min(_int_param(query, "per_page", 30), 200)
    except ValueError as exc:
        return _json(400, {"message": "Bad Request", "errors": [{"resource": "Application", "field": str(exc),
                                                                 "code": "invalid"}]}, state)
    items = _all_activities(datetime.now(UTC), request.config.get("strava_activity_overrides") or {})

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
    return _json(200, payload, state)
