"""Put the first Strava token into Redis (the bootstrap `strava_data_pipeline` needs).

    make strava-token CODE=<authorization code>     exchange a code from Strava's authorize page
    make strava-token TOKEN_FILE=<token.json>       load a token JSON you already have

Runs with Airflow's environment (the Makefile takes care of it): the client id and secret come
from the STRAVA_CLIENT / STRAVA_CLIENT_SECRET variables, the token URL from the `strava`
connection, Redis from `redis_default`. Prints no token.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from include.strava import (
    CLIENT_VARIABLE,
    CONN_ID,
    SECRET_VARIABLE,
    TOKEN_KEY,
    StravaError,
    exchange_authorization_code,
    redis_client,
    save_token,
)


def _variable(name: str) -> str:
    from airflow.models import Variable  # noqa: PLC0415,AIR311 - a CLI outside any task: read the metastore

    return Variable.get(name, default_var="")  # noqa: AIR311


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--code", help="authorization code from https://www.strava.com/oauth/authorize")
    source.add_argument("--token-file", type=Path, help="a token JSON with access_token, refresh_token, expires_at")
    args = parser.parse_args(argv)
    try:
        if args.code:
            from include.http_api import base_url  # noqa: PLC0415

            token = exchange_authorization_code(args.code, _variable(CLIENT_VARIABLE), _variable(SECRET_VARIABLE),
                                                base_url(CONN_ID))
        else:
            token = json.loads(args.token_file.read_text())
            missing = {"access_token", "refresh_token", "expires_at"} - set(token)
            if missing:
                raise StravaError(f"{args.token_file} lacks {sorted(missing)}")
        save_token(redis_client(), token)
    except (StravaError, OSError, ValueError) as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    print(f"Saved a Strava token to Redis key {TOKEN_KEY} (redis_default): expires_at {token.get('expires_at')}, "
          f"scope {token.get('scope', 'as granted')}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
