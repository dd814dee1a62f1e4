"""The contract's connections reach live servers, through the same hooks the pipelines use."""

from devstack.settings import BUCKETS


def test_warehouse_db_is_a_live_postgres(stack):
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    hook = PostgresHook(postgres_conn_id="warehouse_db")
    database, version = hook.get_first("SELECT current_database(), current_setting('server_version_num')::int")

    assert database == "warehouse"
    assert version >= 150000


def test_warehouse_is_not_the_airflow_metadata_db(stack):
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    tables = PostgresHook(postgres_conn_id="warehouse_db").get_records(
        "SELECT tablename FROM pg_tables WHERE tablename = 'dag_run'"
    )
    assert tables == []


def test_redis_default_is_a_live_redis(stack):
    from airflow.providers.redis.hooks.redis import RedisHook

    client = RedisHook(redis_conn_id="redis_default").get_conn()
    client.set("devstack-probe", "ok")

    assert client.get("devstack-probe") == b"ok"
    assert client.info("server")["tcp_port"] == stack.cfg.redis_port


def test_aws_default_sees_every_contract_bucket(stack):
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    hook = S3Hook(aws_conn_id="aws_default")

    assert {b["Name"] for b in hook.get_conn().list_buckets()["Buckets"]} >= set(BUCKETS)
    hook.load_bytes(b"probe", key="probe/x", bucket_name="market-data", replace=True)
    assert hook.read_key("probe/x", bucket_name="market-data") == "probe"
    hook.delete_objects("market-data", ["probe/x"])


def test_s3_rejects_wrong_credentials(stack):
    import boto3
    import botocore.exceptions
    import pytest

    client = boto3.client("s3", endpoint_url=stack.cfg.s3_url, region_name="us-east-1",
                          aws_access_key_id=stack.cfg.credentials.s3_access_key, aws_secret_access_key="wrong")
    with pytest.raises(botocore.exceptions.ClientError):
        client.list_objects_v2(Bucket="weather-data")
