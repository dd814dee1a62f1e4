"""TwelveData stand-in: `/exchange_rate`, `/time_series` and `/technical_indicators` (which the
`twelvedata` Python client fetches once when it starts), with the real error bodies.

- API key: `apikey` query parameter. Keys of 8+ letters, digits, `-` or `_` are accepted, except
  those starting with `invalid` or `REPLACE_ME` (the project's placeholder): 401, as the real API
  answers a wrong key.
- Credits: like the free plan, 8 a minute per key (one per symbol; `technical_indicators` is
  free), then 429 until the next wall-clock minute. Tests change the limit through
  `POST /_standin/config {"twelvedata_credits_per_minute": N}`.
- Errors are `{"code": N, "message": ..., "status": "error"}`. Whether the HTTP status matches the
  code or is 200 (the real API has done both) is the `twelvedata_error_http_status` setting
  (`match` | `200`); faults `http_<code>` force the matching status and `body_<code>` HTTP 200.
- Values are deterministic: the same symbol and minute always give the same rate. Fault
  `rate_divided_1000` serves a rate 1,000 times too small - positive, well-formed, wrong: TwelveData
  has served prices divided by 1,000 (twelvedata-python#69, ETH/USDT lows) and 10,000 times too
  small (#67, BTC/USD on Binance, "occasionally ... every week or two"); only a plausibility check
  on the stored rate catches it.
- `date` (and `start_date`/`end_date`) take the documented formats only - `2006-01-02` or
  `2006-01-02T15:04:05` (twelvedata.com/docs, exchange rate) - in the zone named by `timezone`;
  anything else is a 400, so a client relying on an undocumented format is caught here.
- Market hours: forex trades from Sunday 17:00 to Friday 17:00 New York time (DST-aware: 22:00
  UTC in winter, 21:00 in summer; the FX week as FXCM's API team states it in fxcm/RestAPI#166,
  and TwelveData's first weekly bar at Sunday 22:00 UTC in twelvedata-python#47). A date when it
  is closed gets `{"code": 400, "message": "No data is available on the specified dates. Try
  setting different start/end dates.", "status": "error"}` - with HTTP 200 by default, setting
  `twelvedata_no_data_http_status` (`200` | `match`): the real API has been seen to answer errors
  both ways. `/time_series` leaves closed minutes out, as the real series do.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from devstack.standins.messages import Response

NAME = "twelvedata"
PREFIXES = ("/exchange_rate", "/time_series", "/technical_indicators")
DEFAULT_CONFIG = {"twelvedata_credits_per_minute": 8, "twelvedata_error_http_status": "match",
                  "twelvedata_no_data_http_status": "200"}
NO_DATA = "No data is available on the specified dates. Try setting different start/end dates."
NEW_YORK = ZoneInfo("America/New_York")

# Base rates (quote currency per unit of base) around which the deterministic series move.
PAIRS = {
    "USD/EUR": (0.92, "US Dollar", "Euro"),
    "EUR/USD": (1.087, "Euro", "US Dollar"),
    "GBP/USD": (1.27, "British Pound", "US Dollar"),
    "USD/JPY": (151.2, "US Dollar", "Japanese Yen"),
    "USD/CHF": (0.88, "US Dollar", "Swiss Franc"),
    "USD/PLN": (3.98, "US Dollar", "Polish Zloty"),
}
INTERVALS = {"1min": 60, "5min": 300, "15min": 900, "30min": 1800, "45min": 2700, "1h": 3600, "2h": 7200,
             "4h": 14400, "1day": 86400, "1week": 604800}

MESSAGES = {
    400: "**symbol** parameter is missing or invalid. Please provide a valid symbol according to API documentation: "
         "https://twelvedata.com/docs#reference-data",
    401: "**apikey** parameter is incorrect or not specified. You can get your free API key instantly following this "
         "link: https://twelvedata.com/pricing. If you believe that everything is correct, you can contact us at "
         "https://twelvedata.com/contact/customer",
    404: "**symbol** not found: {symbol}. Please specify it correctly according to API Reference.",
    429: "You have run out of API credits for the current minute. {used} API credits were used, with the current "
         "limit being {limit}. Wait for the next minute or consider switching to a higher tier plan at "
         "https://twelvedata.com/pricing",
    500: "We are experiencing an internal error. Please try again later.",
}
_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{8,}$")
_lock = threading.Lock()


class ApiError(Exception):
    def __init__(self, code: int, message: str, http_status_mode: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status_mode = http_status_mode  # None: the `twelvedata_error_http_status` setting


def market_open(moment: datetime) -> bool:
    """Forex hours: closed from Friday 17:00 to Sunday 17:00, New York time."""
    local = moment.astimezone(NEW_YORK)
    weekday = local.weekday()  # Monday 0 ... Sunday 6
    if weekday == 5:
        return False
    if weekday == 4:
        return local.hour < 17
    if weekday == 6:
        return local.hour >= 17
    return True


def _error_response(code: int, message: str, http_status_mode: str = "match"):
    status = 200 if http_status_mode == "200" else code
    return Response.json(status, {"code": code, "message": message, "status": "error"})


def error(status: int):
    """Fault `http_<status>`: the error body with the matching HTTP status."""
    message = MESSAGES.get(status, MESSAGES[500]).format(symbol="USD/EUR", used=9, limit=8)
    return _error_response(status, message)


def _noise(*key) -> float:
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**63 - 1.0


def rate_at(symbol: str, moment: datetime) -> float:
    """Deterministic exchange rate for the minute containing `moment` (UTC)."""
    base = PAIRS[symbol][0]
    minute = int(moment.timestamp()) // 60
    days = minute / 1440
    drift = 0.03 * math.sin(days / 58.0) + 0.012 * math.sin(days / 9.3)
    wiggle = 0.0015 * _noise(symbol, minute // 15) + 0.0004 * _noise(symbol, minute)
    return round(base * (1 + drift + wiggle), 5 if base < 10 else 3)


def _check_key(query: dict) -> str:
    key = query.get("apikey", "")
    if not _KEY_RE.match(key) or key.lower().startswith(("invalid", "replace_me")):
        raise ApiError(401, MESSAGES[401])
    return key


def _spend_credit(state: dict, config: dict, key: str, credits: int = 1) -> None:
    limit = int(config["twelvedata_credits_per_minute"])
    minute = int(time.time() // 60)
    with _lock:
        used_key = (key, minute)
        used = state.get(used_key, 0) + credits
        state[used_key] = used
        for old in [k for k in state if k[1] < minute]:
            del state[old]
    if used > limit:
        raise ApiError(429, MESSAGES[429].format(used=used, limit=limit))


def _symbol(query: dict) -> str:
    symbol = query.get("symbol", "").upper()
    if not symbol:
        raise ApiError(400, MESSAGES[400])
    if symbol not in PAIRS:
        raise ApiError(404, MESSAGES[404].format(symbol=symbol))
    return symbol


def _zone(query: dict) -> ZoneInfo:
    name = query.get("timezone") or "UTC"
    if name == "Exchange":
        name = "UTC"  # forex trades around the clock; the "exchange" zone is UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ApiError(400, f"**timezone** parameter is invalid: {name}") from None


def _moment(value: str, zone: ZoneInfo, name: str) -> datetime:
    for fmt in ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"):
        try:
            return datetime.strptime(value.strip(), fmt).replace(tzinfo=zone)
        except ValueError:
            continue
    raise ApiError(400, f"**{name}** parameter is invalid: {value}. Supported formats: 2006-01-02 or "
                        "2006-01-02T15:04:05")


def handle(request):
    mode = request.config.get("twelvedata_error_http_status", "match")
    forced = None
    if request.fault and request.fault.startswith("body_"):
        forced = int(request.fault.removeprefix("body_"))
    try:
        if forced is not None:
            raise ApiError(forced, MESSAGES.get(forced, MESSAGES[500]).format(symbol="USD/EUR", used=9, limit=8))
        if request.path.startswith("/technical_indicators"):
            return Response.json(200, {"data": TECHNICAL_INDICATORS, "status": "ok"})
        key = _check_key(request.query)
        if request.path.startswith("/exchange_rate"):
            payload = _exchange_rate(request, key)
        else:
            payload = _time_series(request, key)
    except ApiError as exc:
        return _error_response(exc.code, exc.message, "200" if forced is not None else exc.http_status_mode or mode)
    if request.fault == "empty":
        payload = {}
    if request.fault == "rate_divided_1000" and "rate" in payload:
        payload = {**payload, "rate": round(payload["rate"] / 1000, 8)}
    return Response.json(200, payload)


def _exchange_rate(request, key: str) -> dict:
    query = request.query
    symbol = _symbol(query)
    zone = _zone(query)
    _spend_credit(request.state, request.config, key)
    moment = _moment(query["date"], zone, "date") if query.get("date") else datetime.now(UTC)
    if moment.astimezone(UTC) > datetime.now(UTC) + timedelta(minutes=1):
        raise ApiError(400, f"**date** parameter is in the future: {query['date']}")
    moment = moment.astimezone(UTC).replace(second=0, microsecond=0)
    if not market_open(moment):
        raise ApiError(400, NO_DATA, request.config.get("twelvedata_no_data_http_status", "200"))
    return {"symbol": symbol, "rate": rate_at(symbol, moment), "timestamp": int(moment.timestamp())}


def _time_series(request, key: str) -> dict:
    query = request.query
    symbol = _symbol(query)
    interval = query.get("interval", "")
    if interval not in INTERVALS:
        raise ApiError(400, f"**interval** parameter is missing or invalid. Supported: {', '.join(INTERVALS)}")
    try:
        outputsize = int(query.get("outputsize", 30))
    except ValueError:
        raise ApiError(400, "**outputsize** parameter is invalid") from None
    if not 1 <= outputsize <= 5000:
        raise ApiError(400, "**outputsize** must be between 1 and 5000")
    zone = _zone(query)
    _spend_credit(request.state, request.config, key)
    step = INTERVALS[interval]
    end = _moment(query["end_date"], zone, "end_date") if query.get("end_date") else datetime.now(UTC)
    end_epoch = int(end.timestamp()) // step * step
    start_epoch = int(_moment(query["start_date"], zone, "start_date").timestamp()) if query.get("start_date") else None
    values = []
    epoch = end_epoch
    while len(values) < outputsize and (start_epoch is None or epoch >= start_epoch):
        opened = datetime.fromtimestamp(epoch, UTC)
        if step < 86400 and not market_open(opened):
            epoch -= step
            continue
        closed = datetime.fromtimestamp(epoch + step - 60, UTC)
        prices = [rate_at(symbol, opened), rate_at(symbol, closed),
                  rate_at(symbol, opened + timedelta(seconds=step // 2))]
        stamp = opened.astimezone(zone)
        values.append({
            "datetime": stamp.strftime("%Y-%m-%d" if step >= 86400 else "%Y-%m-%d %H:%M:%S"),
            "open": f"{prices[0]:.5f}", "high": f"{max(prices):.5f}", "low": f"{min(prices):.5f}",
            "close": f"{prices[1]:.5f}",
        })
        epoch -= step
    if not values:
        raise ApiError(400, NO_DATA, request.config.get("twelvedata_no_data_http_status", "200"))
    base, quote = PAIRS[symbol][1:]
    return {
        "meta": {"symbol": symbol, "interval": interval, "currency_base": base, "currency_quote": quote,
                 "type": "Physical Currency"},
        "values": values,
        "status": "ok",
    }


TECHNICAL_INDICATORS = {
    "sma": {
        "enable": True, "full_name": "Simple Moving Average", "type": "Overlap Studies", "overlay": True,
        "output_values": {"sma": {"default_color": "#FF0000"}},
        "parameters": {"time_period": {"default": 9, "range": [1, 800], "type": "int"}},
        "tinting": {},
    },
    "rsi": {
        "enable": True, "full_name": "Relative Strength Index", "type": "Momentum Indicators", "overlay": False,
        "output_values": {"rsi": {"default_color": "#0000FF"}},
        "parameters": {"time_period": {"default": 14, "range": [1, 800], "type": "int"}},
        "tinting": {"area": {"display": "fill", "transparency": 0.2, "lower_bound": 30, "upper_bound": 70}},
    },
}
