"""The project's XCom backend: Airflow's object-storage backend with every S3 call bounded in time.

The Dockerfile sets `AIRFLOW__CORE__XCOM_BACKEND=include.xcom_backend.BoundedXComObjectStorageBackend`
(as Astronomer's own custom-XCom-backend tutorial names a class in include/), so `astro dev start`,
Astro, `make run` and `make test` use it alike. It is the common.io provider's
XComObjectStorageBackend - values above AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_THRESHOLD go to
s3://airflow-xcom/xcom/, smaller ones stay in the metadata DB - with one change: before the backend
touches S3 it applies include/object_storage.bounded() to the filesystem of its path, the same
cached s3fs filesystem the provider would use. Without it a task whose only S3 call is its XCom push
(weather_data_classes_api's extract) waits on a hung S3 for as long as it stays hung: s3fs/aiohttp
wait for `100 Continue` with no timeout (include/object_storage.py says why). A failed call raises
S3Unavailable naming the connection, endpoint and object.

This module is imported by every task process (airflow.sdk.execution_time.xcom resolves the backend at
import), so it imports nothing heavy: include.object_storage (aiobotocore, botocore) only when S3 is
about to be used.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Any

from airflow.providers.common.io.xcom.backend import (
    XComObjectStorageBackend,
    _get_base_path,
    _get_threshold,
)
from airflow.sdk.bases.xcom import BaseXCom
from airflow.utils.json import XComEncoder


@contextmanager
def _bounded_s3(doing: str, path):
    """Bound path's filesystem in time and name S3 and the object in a connection failure."""
    from include.object_storage import bounded, naming_s3  # noqa: PLC0415 - heavy, and only when S3 is used

    bounded(path.fs)
    bucket, _, key = path.path.partition("/")
    with naming_s3(doing, path, bucket, key, path.conn_id or "aws_default"):
        yield


def _stored_path(value: Any):
    """The object a stored XCom value points to, or None when the value itself is in the DB."""
    if not isinstance(value, str):
        return None
    try:
        return XComObjectStorageBackend._get_full_path(value)
    except (TypeError, ValueError):
        return None


class BoundedXComObjectStorageBackend(XComObjectStorageBackend):
    """XComObjectStorageBackend whose S3 calls fail in bounded time, naming S3 and the object."""

    @staticmethod
    def serialize_value(  # type: ignore[override]
        value: Any,
        *,
        key: str | None = None,
        task_id: str | None = None,
        dag_id: str | None = None,
        run_id: str | None = None,
        map_index: int | None = None,
    ) -> bytes | str:
        threshold = _get_threshold()
        # The provider's own test: only a value of at least `threshold` bytes goes to S3. Measuring it
        # here (one more json.dumps) keeps small XComs from building an S3 client at all.
        if threshold >= 0 and len(json.dumps(value, cls=XComEncoder).encode("utf-8")) >= threshold:
            base = _get_base_path()
            target = base.joinpath(dag_id or "NO_DAG_ID", run_id or "NO_RUN_ID", task_id or "NO_TASK_ID")
            with _bounded_s3("writing an XCom under", target):
                return XComObjectStorageBackend.serialize_value(
                    value, key=key, task_id=task_id, dag_id=dag_id, run_id=run_id, map_index=map_index
                )
        return XComObjectStorageBackend.serialize_value(
            value, key=key, task_id=task_id, dag_id=dag_id, run_id=run_id, map_index=map_index
        )

    @staticmethod
    def deserialize_value(result) -> Any:
        path = _stored_path(BaseXCom.deserialize_value(result))
        if path is None:
            return XComObjectStorageBackend.deserialize_value(result)
        with _bounded_s3("reading the XCom", path):
            return XComObjectStorageBackend.deserialize_value(result)

    @staticmethod
    def purge(xcom, session=None) -> None:
        path = _stored_path(xcom.value)
        if path is None:
            return
        with _bounded_s3("deleting the XCom", path):
            XComObjectStorageBackend.purge(xcom, session=session)
