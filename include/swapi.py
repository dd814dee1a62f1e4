"""SWAPI (the Star Wars API): characters for the course's XCom demo."""

from __future__ import annotations

from include.http_api import CONNECT_TIMEOUT_S, READ_TIMEOUT_S, base_url

CONN_ID = "swapi"
XCOM_KEY = "character_info"


class CharacterNotFound(LookupError):
    pass


def fetch_character(person_id: int) -> dict:
    """GET /api/people/<id>/ from the `swapi` connection."""
    import requests  # noqa: PLC0415

    url = f"{base_url(CONN_ID)}/api/people/{int(person_id)}/"
    response = requests.get(url, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S))
    if response.status_code == 404:
        raise CharacterNotFound(f"SWAPI has no person {person_id} ({url}: {response.json().get('detail')})")
    response.raise_for_status()
    return response.json()


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
