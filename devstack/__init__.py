"""Docker-free local stack for this Astro project: real Postgres, Redis and S3 servers, API
stand-ins and Airflow itself, for `make run` and `make test`. Not deployed to Astro."""
