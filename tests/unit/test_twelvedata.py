"""The TwelveData client (include/twelvedata.py) against the stand-in: records, and the failure
policy - retry rate limits and outages, fail everything else at once, never leak the key."""

from datetime import timedelta

import pytest
from airflow.sdk import RetryAction

from devstack.standins.twelvedata import rate_at
from include.twelvedata import (
    TwelveDataRejected,
    TwelveDataRetryable,
    TwelveDataRetryPolicy,
    fetch_exchange_rate,
)

KEY = "unit-test-key-0042"


def _fetch(stack, apikey=KEY, at="2025-03-10T12:34:56+00:00", symbol="USD/EUR"):
    return fetch_exchange_rate(symbol, at, stack.standin_url, apikey)


def test_record_is_the_rate_at_the_given_minute(standin):
    from datetime import UTC, datetime

    record = _fetch(standin)

    assert record == {
        "symbol": "USD/EUR",
        "rate": rate_at("USD/EUR", datetime(2025, 3, 10, 12, 34, tzinfo=UTC)),
        "timestamp": 1741610040,
        "rate_at": "2025-03-10T12:34:56+00:00",
    }


def test_request_sends_symbol_utc_date_and_key(standin):
    standin.forget_requests()
    _fetch(standin, at="2025-03-10T08:34:00-04:00")

    (request,) = [r for r in standin.requests_seen() if r["path"] == "/exchange_rate"]
    assert request["query"]["symbol"] == "USD/EUR"
    assert request["query"]["date"] == "2025-03-10T12:34:00"  # documented: 2006-01-02T15:04:05
    assert request["query"]["timezone"] == "UTC"
    assert request["query"]["apikey"] == KEY


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("http_401", "**apikey** parameter is incorrect"),
        ("body_401", "**apikey** parameter is incorrect"),  # HTTP 200 with an error body
        ("http_400", "**symbol** parameter is missing or invalid"),
        ("body_400", "**symbol** parameter is missing or invalid"),
        ("http_404", "**symbol** not found"),
        ("body_404", "**symbol** not found"),
        ("empty", "empty answer for USD/EUR at 2025-03-10T12:34:56 UTC"),
        ("not_json", "malformed JSON answer"),
    ],
)
def test_errors_that_retrying_cannot_fix_are_rejected_with_the_api_message(standin, fault, message):
    standin.inject_fault("/exchange_rate", fault)

    with pytest.raises(TwelveDataRejected) as raised:
        _fetch(standin)

    assert message in str(raised.value)
    assert KEY not in str(raised.value)


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("http_429", "TwelveData rate limit: You have run out of API credits for the current minute"),
        ("body_429", "TwelveData rate limit: You have run out of API credits for the current minute"),
        ("http_500", "TwelveData unavailable"),
        ("dropped", "TwelveData unavailable"),
        ("truncated", "TwelveData unavailable: its answer broke off after"),
        ("empty_body", "TwelveData unavailable: its answer broke off after 0 characters"),
    ],
)
def test_rate_limits_and_outages_are_retryable(standin, fault, message):
    standin.inject_fault("/exchange_rate", fault)

    with pytest.raises(TwelveDataRetryable, match=message) as raised:
        _fetch(standin)

    assert KEY not in str(raised.value)


def test_the_standin_takes_only_the_documented_date_formats(standin):
    """twelvedata.com/docs (exchange rate): `2006-01-02` or `2006-01-02T15:04:05`."""
    import json
    import urllib.error
    import urllib.request

    def ask(date):
        url = f"{standin.standin_url}/exchange_rate?symbol=USD/EUR&timezone=UTC&apikey={KEY}&date={date}"
        try:
            with urllib.request.urlopen(url.replace(" ", "%20"), timeout=5) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as err:
            return json.load(err)

    assert "rate" in ask("2025-03-10T12:34:00") and "rate" in ask("2025-03-10")
    assert ask("2025-03-10 12:34:00")["code"] == 400  # what the pipeline used to send


@pytest.mark.parametrize("http_status", ["200", "match"])
def test_a_closed_market_minute_skips_instead_of_failing(standin, http_status):
    from airflow.sdk.exceptions import AirflowSkipException

    standin.configure(twelvedata_no_data_http_status=http_status)
    with pytest.raises(AirflowSkipException, match="No data is available on the specified dates") as raised:
        _fetch(standin, at="2025-03-15T12:00:00+00:00")  # a Saturday
    assert "TwelveData has no rate for USD/EUR at 2025-03-15T12:00:00 UTC" in str(raised.value)


@pytest.mark.parametrize(("at", "open_"), [
    ("2025-03-14T20:59:00+00:00", True),   # Friday 16:59 in New York (EDT)
    ("2025-03-14T21:00:00+00:00", False),  # Friday 17:00: closed for the weekend
    ("2025-03-16T20:59:00+00:00", False),  # Sunday 16:59
    ("2025-03-16T21:00:00+00:00", True),   # Sunday 17:00: the FX week opens
    ("2025-01-10T21:59:00+00:00", True),   # Friday 16:59 EST
    ("2025-01-10T22:00:00+00:00", False),
])
def test_the_standin_keeps_new_york_forex_hours(at, open_):
    from datetime import datetime

    from devstack.standins.twelvedata import market_open

    assert market_open(datetime.fromisoformat(at)) is open_


def test_a_stale_quote_is_no_rate_for_the_minute(standin, monkeypatch):
    """Should TwelveData answer a closed minute with its last rate and that rate's own timestamp,
    the record would claim a time it does not have: skipped as well."""
    import json as json_module

    from airflow.sdk.exceptions import AirflowSkipException

    friday_close = 1742590740  # 2025-03-21T20:59:00Z
    real_loads = json_module.loads

    def last_rate(text, *args, **kwargs):
        payload = real_loads(text, *args, **kwargs)
        if isinstance(payload, dict) and "rate" in payload:
            payload["timestamp"] = friday_close
        return payload

    monkeypatch.setattr("requests.models.complexjson.loads", last_rate)
    with pytest.raises(AirflowSkipException, match="its newest rate is from 2025-03-21T20:59:00"):
        _fetch(standin, at="2025-03-24T08:00:00+00:00")


def test_unknown_symbol_and_invalid_key_from_the_real_checks(standin):
    with pytest.raises(TwelveDataRejected, match=r"\*\*symbol\*\* not found: XAU/ZZZ"):
        _fetch(standin, symbol="XAU/ZZZ")
    with pytest.raises(TwelveDataRejected, match=r"\*\*apikey\*\* parameter is incorrect") as raised:
        _fetch(standin, apikey="invalid-key-31337")
    assert "invalid-key-31337" not in str(raised.value)


def test_per_minute_credits_run_out_like_the_free_plan(standin):
    standin.configure(twelvedata_credits_per_minute=2)
    _fetch(standin)
    _fetch(standin)  # may land in the next minute on a slow machine; the third call is what matters

    with pytest.raises(TwelveDataRetryable, match="API credits were used, with the current limit being 2"):
        _fetch(standin)
        _fetch(standin)


@pytest.mark.parametrize("apikey", ["", "   ", "REPLACE_ME_twelvedata_api_key"])
def test_missing_or_placeholder_key_says_how_to_set_it(standin, apikey):
    standin.forget_requests()

    how_to = "TwelveData API key missing.*Set the Airflow variable TWELVEDATA_API_KEY"
    with pytest.raises(TwelveDataRejected, match=how_to):
        _fetch(standin, apikey=apikey)
    assert standin.requests_seen() == []  # nothing sent


def test_unreachable_api_message_has_no_key():
    from devstack.services import free_port

    with pytest.raises(TwelveDataRetryable, match="TwelveData unavailable: ConnectionError") as raised:
        fetch_exchange_rate("USD/EUR", "2025-01-01T00:00:00+00:00", f"http://127.0.0.1:{free_port()}", KEY)
    assert KEY not in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__context__ is None


def test_retry_policy_backs_off_exponentially_and_fails_the_rest():
    policy = TwelveDataRetryPolicy(first_delay=timedelta(seconds=10), max_delay=timedelta(seconds=60))

    delays = [policy.evaluate(TwelveDataRetryable("TwelveData rate limit: x"), n, 5).retry_delay for n in (1, 2, 3, 4)]
    assert delays == [timedelta(seconds=s) for s in (10, 20, 40, 60)]
    # A virtualenv task's failure arrives as text in an AirflowException.
    venv_failure = RuntimeError("Process returned non-zero exit status 1.\nTwelveData unavailable: 503")
    assert policy.evaluate(venv_failure, 1, 5).action == RetryAction.RETRY
    assert policy.evaluate(RuntimeError("TwelveData rejected the request: 404"), 1, 5).action == RetryAction.FAIL
