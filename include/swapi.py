"""SWAPI (the Star Wars API): characters for the course's XCom demo."""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowFailException

from include.http_api import CONNECT_TIMEOUT_S, READ_TIMEOUT_S, base_url, parse_json_body

CONN_ID = "swapi"
XCOM_KEY = "character_info"


class SwapiError(RuntimeError):
    """SWAPI gave no usable answer."""


class SwapiUnavailable(SwapiError):
    """Server error, network failure or an answer that broke off: the task's retries ask again."""


class CharacterNotFound(SwapiError, LookupError, AirflowFailException):
    """SWAPI has no such person: asking again gets the same 404, so the task fails at once."""


class SwapiBadResponse(SwapiError, AirflowFailException):
    """A whole answer that is not a person (not JSON, not an object): fails at once."""


def fetch_character(person_id: int) -> dict:
    """GET /api/people/<id>/ from the `swapi` connection."""
    import requests  # noqa: PLC0415

    url = f"{base_url(CONN_ID)}/api/people/{int(person_id)}/"
    try:
        response = requests.get(url, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S))
    except requests.RequestException as exc:
        raise SwapiUnavailable(f"SWAPI request to {url} failed: {type(exc).__name__}: {exc}") from exc
    payload, problem = parse_json_body(response.content)
    if response.status_code == 404:
        detail = payload.get("detail") if isinstance(payload, dict) else response.reason
        raise CharacterNotFound(f"SWAPI has no person {person_id} ({url}: {detail})")
    if response.status_code == 429 or response.status_code >= 500:
        raise SwapiUnavailable(f"SWAPI answered HTTP {response.status_code} for {url} (retried)")
    if response.status_code != 200:
        raise SwapiBadResponse(f"SWAPI answered HTTP {response.status_code} for {url}: {response.text[:200]}")
    if problem is not None and problem[0] == "cut":
        raise SwapiUnavailable(f"SWAPI's answer for {url} broke off: {problem[1]} (retried)")
    if not isinstance(payload, dict):
        raise SwapiBadResponse(f"SWAPI returned no person object for {url}: "
                               f"{problem[1] if problem else type(payload).__name__}")
    return payload


def character_info(person: dict) -> dict:
    """What the demo shares: a few derived fields (numbers stay None when SWAPI says 'unknown')."""

    def number(text: str) -> float | None:
        try:
            return float(text.replace(",", ""))
        except (AttributeError, ValueError):
            return None

    return {
        "name": person["name"],
        "height_cm": number(person.get("height")),
        "mass_kg": number(person.get("mass")),
        "birth_year": person.get("birth_year"),
        "film_count": len(person.get("films", [])),
    }
