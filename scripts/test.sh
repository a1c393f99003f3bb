#!/usr/bin/env bash
# The whole test suite: installs what it needs (scripts/setup.sh), lints, type-checks, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check agent tests benchmarks dashboards scripts
.venv/bin/mypy
set +e
.venv/bin/pytest -q -p no:cacheprovider "$@"
code=$?
set -e
if [ "$code" -eq 5 ]; then
    echo "test.sh: pytest collected no tests: failing" >&2
    exit 1
fi
exit "$code"
