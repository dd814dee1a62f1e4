"""Put the first Strava token into Redis (the bootstrap `strava_data_pipeline` needs).

    make strava-token CODE=<authorization code>     exchange a code from Strava's authorize page
    make strava-token TOKEN_FILE=<token.json>       load a token JSON you already have
    --if-missing                                    keep a token Redis already holds (make run OFFLINE=1
                                                    seeds the stand-in's first token this way)

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
    REDIS_CONN_ID,
    SECRET_VARIABLE,
    TOKEN_KEY,
    StravaError,
    exchange_authorization_code,
    require_credentials,
    save_token,
)

# A command outside any task: the Task SDK's accessors do not reach the metastore from here, so
# connections and variables are read with the core models (environment first, then the DB).


def _variable(name: str) -> str:
    from airflow.models import Variable  # noqa: PLC0415,AIR311

    return Variable.get(name, default_var="")  # noqa: AIR311


def _connection(conn_id: str):
    from airflow.models import Connection  # noqa: PLC0415,AIR311

    return Connection.get_connection_from_secrets(conn_id)  # noqa: AIR311


def _redis(conn_id: str = REDIS_CONN_ID):
    import redis  # noqa: PLC0415

    conn = _connection(conn_id)
    return redis.Redis(host=conn.host or "localhost", port=int(conn.port or 6379), password=conn.password or None,
                       db=int(conn.extra_dejson.get("db", 0)), socket_timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--code", help="authorization code from https://www.strava.com/oauth/authorize")
    source.add_argument("--token-file", type=Path, help="a token JSON with access_token, refresh_token, expires_at")
    parser.add_argument("--if-missing", action="store_true", help="do nothing when Redis already holds a token")
    args = parser.parse_args(argv)
    from redis import RedisError  # noqa: PLC0415

    try:
        if args.if_missing and _redis().exists(TOKEN_KEY):
            print(f"Redis key {TOKEN_KEY} (redis_default) already holds a Strava token: kept.")
            return 0
        if args.code:
            from include.http_api import base_url_from_connection  # noqa: PLC0415

            client_id, client_secret = _variable(CLIENT_VARIABLE), _variable(SECRET_VARIABLE)
            require_credentials(client_id, client_secret)
            token = exchange_authorization_code(args.code, client_id, client_secret,
                                                base_url_from_connection(_connection(CONN_ID)))
        else:
            token = json.loads(args.token_file.read_text())
            missing = {"access_token", "refresh_token", "expires_at"} - set(token)
            if missing:
                raise StravaError(f"{args.token_file} lacks {sorted(missing)}")
        save_token(_redis(), token)
    except (StravaError, OSError, ValueError, RedisError) as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    print(f"Saved a Strava token to Redis key {TOKEN_KEY} (redis_default): expires_at {token.get('expires_at')}, "
          f"scope {token.get('scope', 'as granted')}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
