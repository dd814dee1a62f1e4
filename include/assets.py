"""Every lasting output of the project, declared once as an Airflow Asset.

Producers list them as task outlets; consumers schedule on them. Import from here, never re-declare
a URI in a DAG file.

Identity - the same under `make run`, `astro dev start` and on Astro:
- S3 outputs: `s3://<bucket>/<prefix>` (the Amazon provider's scheme). Bucket names are fixed by the
  project's contract and are the same everywhere; only the endpoint differs, and the endpoint is the
  `aws_default` connection's business, not the asset's. One asset per kind of object (a prefix);
  the object a run wrote goes into the event's extra (`key`).
- Warehouse tables: `postgres://warehouse-db:5432/warehouse/public/<table>` (the Postgres
  provider's scheme). The host part is the warehouse's logical name - the `warehouse_db`
  connection's host in airflow_settings.yaml and the compose service - not the address a given
  environment reaches it at (127.0.0.1:15432 under make run, a managed host on Astro). Asset URIs
  are identifiers: resolving one to a server is what the connection does, so the URI never changes
  when the connection is re-pointed.
Each asset also has a short stable `name` (what the UI's Assets page lists).

Cheap to import (DAG parsing): Asset objects only - see _declared for why they are not made with a
plain `Asset(name, uri)`.
"""

from __future__ import annotations

from airflow.sdk import Asset

WAREHOUSE_URI = "postgres://warehouse-db:5432/warehouse/public"


def _declared(name: str, uri: str, group: str) -> Asset:
    """Asset(name=name, uri=uri, group=group), with `uri` written as Airflow normalizes it (no
    trailing slash) instead of normalized at parse time.

    Airflow normalizes a URI that has a scheme by loading every installed provider's asset-URI
    handler (airflow/sdk/definitions/asset/__init__.py, _sanitize_uri -> ProvidersManagerTaskRuntime
    .asset_uri_handlers), and the Amazon provider's module imports S3Hook, i.e. boto3 and botocore
    (~0.3 s): every DAG file with an outlet would pay that on every parse (tests/dags/test_parse_cost.py).
    The asset is made with its name as URI (no scheme: nothing loaded), then given its real URI.
    tests/unit/test_assets.py checks that each URI is exactly what Airflow's normalization makes of it."""
    asset = Asset(name=name, uri=name, group=group)
    object.__setattr__(asset, "uri", uri.rstrip("/"))  # past attrs' on-setattr converter, as above
    return asset


def _table(table: str) -> Asset:
    return _declared(f"warehouse.{table}", f"{WAREHOUSE_URI}/{table}", "warehouse")


def _objects(name: str, bucket: str, prefix: str) -> Asset:
    return _declared(name, f"s3://{bucket}/{prefix}", "lake")


# -- the lake (S3) -------------------------------------------------------------------------------
WEATHER_HOURLY_CSV = _objects("weather_data.hourly_temperature", "weather-data", "hourly_temperature/")
WEATHER_DAILY_CSV = _objects("weather_data.daily_temperature_range", "weather-data", "daily_temperature_range/")
# One per DAG writing market data (`<dag_id>/USD_EUR/<logical date>.json`).
MARKET_DATA_RATES = _objects("market_data.scheduling_dataset_gathering", "market-data",
                             "scheduling_dataset_gathering/")
MARKET_DATA_VENVS = _objects("market_data.scheduling_with_venvs", "market-data", "scheduling_with_venvs/")
STRAVA_RAW_ACTIVITIES = _objects("lifedata.stravaact", "lifedata", "stravaact/")
TLC_RAW_CSV = _objects("nyc_tlc.raw", "nyc-tlc", "raw/")
TLC_PARQUET = _objects("nyc_tlc.parquet", "nyc-tlc", "parquet/")
TAXI_WEATHER_REPORTS = _objects("weather_data.reports.taxi_daily_weather", "weather-data",
                                "reports/taxi_daily_weather/")
TAXI_DEMAND_MODEL = _objects("models.nyc_taxi_demand", "models", "nyc_taxi_demand/")
TAXI_DEMAND_REPORTS = _objects("weather_data.reports.nyc_taxi_demand", "weather-data", "reports/nyc_taxi_demand/")

# -- the warehouse (Postgres, warehouse_db) --------------------------------------------------------
EXCHANGE_RATES = _table("exchange_rates")
STRAVA_ACTIVITY = _table("strava_activity")
YELLOW_TAXI_TRIPS = _table("yellow_taxi_trips")
TAXI_DAILY_WEATHER = _table("taxi_daily_weather")
TAXI_DEMAND_FORECAST = _table("taxi_demand_forecast")
TAXI_DEMAND_FORECAST_ACCURACY = _table("taxi_demand_forecast_accuracy")
