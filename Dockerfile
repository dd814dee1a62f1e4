# Astro Runtime 3.3-8 = Apache Airflow 3.3.2 on Python 3.12. The local environment (`make install`,
# requirements-dev.lock) pins the same Airflow and Python: move both together (README, "Upgrading").
FROM astrocrpublic.azurecr.io/runtime:3.3-8-python-3.12

# Image-level Airflow settings, used by `astro dev start`, `astro deploy` and - read from this
# file - by `make run` and `make test`, so the three agree.
# Object-storage XCom backend: values above the threshold (bytes) go to S3, smaller ones to the DB.
# include/xcom_backend.py is the common.io provider's backend with its S3 calls bounded in time.
ENV AIRFLOW__CORE__XCOM_BACKEND=include.xcom_backend.BoundedXComObjectStorageBackend
ENV AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH=s3://aws_default@airflow-xcom/xcom
ENV AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_THRESHOLD=65536
ENV AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_COMPRESSION=gzip
# PythonVirtualenvOperator builds its venvs with uv (installed from requirements.txt).
ENV AIRFLOW__STANDARD__VENV_INSTALL_METHOD=uv

# The demand model's own interpreter (include/demand_forecast.run_model): numpy, scikit-learn and holidays
# without pandas/pyarrow, so the training task stays within 300 MB (docs/demand-forecast.md#cost). Astro
# runs a Dockerfile's RUN commands as the last build steps, after the project is copied in
# (https://astronomer.io/docs/cli/v1.46/customize-dockerfile, "Run commands on build").
RUN python -m venv .venv-model && .venv-model/bin/pip install --no-cache-dir -r requirements-model.txt
