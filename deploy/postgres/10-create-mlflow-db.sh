#!/bin/sh
# Runs once, when the postgres container initialises an empty data directory
# (/docker-entrypoint-initdb.d). The image creates POSTGRES_DB (Dagster's database); MLflow needs a
# database of its own because both keep a table named `runs`.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<SQL
CREATE DATABASE "${MLFLOW_POSTGRES_DB}" OWNER "${POSTGRES_USER}";
SQL
