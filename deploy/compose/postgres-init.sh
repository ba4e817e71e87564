#!/usr/bin/env bash
# One database and one login per service (compose's PostgreSQL; in Kubernetes each service has its own
# CloudNativePG cluster). Runs once, when the data directory is first initialised.
set -euo pipefail

for service in members matching notifications gateway; do
  var="$(echo "${service}" | tr '[:lower:]' '[:upper:]')_DB_PASSWORD"
  password="${!var:?${var} must be set}"
  psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER}" --dbname postgres \
    -v role="${service}" -v password="${password}" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'password';
CREATE DATABASE :"role" OWNER :"role";
REVOKE ALL ON DATABASE :"role" FROM PUBLIC;
SQL
done
