"""SWAPI stand-in: `/api/people/{id}/` with the real fields (numbers as strings, "unknown" where
SWAPI has no value) for the first characters; any other id answers 404 {"detail": "Not found"}."""

from __future__ import annotations

import re

from devstack.standins.messages import Response

NAME = "swapi"
PREFIXES = ("/api/people/",)
BASE = "https://swapi.dev/api"
_PEOPLE = {
    1: ("Luke Skywalker", "172", "77", "blond", "fair", "blue", "19BBY", "male", 1, [1, 2, 3, 6], [], [14, 30],
        [12, 22]),
    2: ("C-3PO", "167", "75", "n/a", "gold", "yellow", "112BBY", "n/a", 1, [1, 2, 3, 4, 5, 6], [2], [], []),
    3: ("R2-D2", "96", "32", "n/a", "white, blue", "red", "33BBY", "n/a", 8, [1, 2, 3, 4, 5, 6], [2], [], []),
    4: ("Darth Vader", "202", "136", "none", "white", "yellow", "41.9BBY", "male", 1, [1, 2, 3, 6], [], [], [13]),
    5: ("Leia Organa", "150", "49", "brown", "light", "brown", "19BBY", "female", 2, [1, 2, 3, 6], [], [30], []),
    10: ("Obi-Wan Kenobi", "182", "77", "auburn, white", "fair", "blue-gray", "57BBY", "male", 20,
         [1, 2, 3, 4, 5, 6], [], [38], [48, 59, 64, 65, 74]),
    13: ("Chewbacca", "228", "112", "brown", "unknown", "blue", "200BBY", "male", 14, [1, 2, 3, 6], [3], [19],
         [10, 22]),
    16: ("Jabba Desilijic Tiure", "175", "1,358", "n/a", "green-tan, brown", "orange", "600BBY", "hermaphrodite",
         24, [1, 3, 4], [5], [], []),
    20: ("Yoda", "66", "17", "white", "green", "brown", "896BBY", "male", 28, [2, 3, 4, 5, 6], [6], [], []),
    22: ("Boba Fett", "183", "78.2", "black", "fair", "brown", "31.5BBY", "male", 10, [2, 3, 5], [], [], [21]),
}
_PATH = re.compile(r"^/api/people/(\d+)/?$")


def error(status: int):
    return Response.json(status, {"detail": "Not found" if status == 404 else "Server error"})


def person(person_id: int) -> dict | None:
    if person_id not in _PEOPLE:
        return None
    (name, height, mass, hair, skin, eyes, born, gender, world, films, species, vehicles,
     starships) = _PEOPLE[person_id]
    return {
        "name": name, "height": height, "mass": mass, "hair_color": hair, "skin_color": skin,
        "eye_color": eyes, "birth_year": born, "gender": gender, "homeworld": f"{BASE}/planets/{world}/",
        "films": [f"{BASE}/films/{n}/" for n in films],
        "species": [f"{BASE}/species/{n}/" for n in species],
        "vehicles": [f"{BASE}/vehicles/{n}/" for n in vehicles],
        "starships": [f"{BASE}/starships/{n}/" for n in starships],
        "created": "2014-12-09T13:50:51.644000Z", "edited": "2014-12-20T21:17:56.891000Z",
        "url": f"{BASE}/people/{person_id}/",
    }


def handle(request):
    match = _PATH.match(request.path)
    record = person(int(match.group(1))) if match else None
    if record is None:
        return error(404)
    return Response.json(200, record)
