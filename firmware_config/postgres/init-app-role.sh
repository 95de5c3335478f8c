#!/bin/sh
# Runs once, when the postgres container (docker-compose.yml) first creates its
# data folder: makes the role the panicbutton server logs in as. It owns
# nothing: `panicbutton db grant panicbutton_app` (the compose file's `migrate`
# service, run as the owner) then gives it read and write on the working tables
# and only SELECT and INSERT on the incident log.
set -eu
: "${PANICBUTTON_APP_DB_PASSWORD:?set PANICBUTTON_APP_DB_PASSWORD}"
psql -v ON_ERROR_STOP=1 -v app_password="$PANICBUTTON_APP_DB_PASSWORD" \
     --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
CREATE ROLE panicbutton_app LOGIN PASSWORD :'app_password';
SQL
