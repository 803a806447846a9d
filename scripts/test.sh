#!/usr/bin/env bash
# Install everything, start PostgreSQL/Redis if needed, lint, type-check, run all tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh ml,dev
scripts/services.sh

export HPS_TEST_DATABASE_URL="${HPS_TEST_DATABASE_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/hps_test}"
.venv/bin/python - <<'PY'
import os, psycopg
from sqlalchemy.engine import make_url
url = make_url(os.environ["HPS_TEST_DATABASE_URL"])
admin = url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
with psycopg.connect(admin, autocommit=True) as conn:
    if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (url.database,)).fetchone():
        conn.execute(f'CREATE DATABASE "{url.database}"')
        print(f"created test database {url.database}")
PY

# One command per line: with `set -e`, a failure inside an `a && b` list would not stop us.
echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"
.venv/bin/mypy
echo "== toy generator (built once into its cache; several tests use it)"
.venv/bin/python -m scripts.build_toy_pipeline --quiet
echo "== pytest"
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: failing on purpose" >&2
  exit 1
fi
exit "$status"
