#!/usr/bin/env bash
# The control plane's HTTP contract, checked against a running `tenancy serve`:
#  1. openapi-spec-validator: the served OpenAPI document is valid OpenAPI 3.1;
#  2. schemathesis: generated requests (conforming and not, a bounded number per
#     operation) find no server error, no status, header or body the document does not
#     declare, no conforming request refused and no malformed request accepted.
# Both tools come from PyPI, pinned, into a virtual environment under target/. `serve`
# runs on the embedded default (private PostgreSQL clusters, stopped on exit) with the
# rate limits of its public routes raised (the limits have their own tests) and its
# admin token as printed; the script stops it on exit.
#
#   scripts/api-contract.sh                 # builds the binary first
#   TENANCY_BIN=target/debug/tenancy scripts/api-contract.sh
#   API_CONTRACT_EXAMPLES=100 scripts/api-contract.sh
set -euo pipefail
cd "$(dirname "$0")/.."

schemathesis_version=4.32.5
validator_version=0.9.0
examples=${API_CONTRACT_EXAMPLES:-25}
seed=${API_CONTRACT_SEED:-20251203}
venv="${TENANCY_API_CONTRACT_VENV:-$PWD/target/api-contract-venv}"
out="$PWD/target/api-contract"
python=${PYTHON:-python3}

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv" >&2 || {
        echo "api-contract.sh: creating a virtual environment failed; install python3-venv (apt-get install -y python3-venv)" >&2
        exit 1
    }
fi
if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('schemathesis') != '$schemathesis_version' or m.version('openapi-spec-validator') != '$validator_version')" 2>/dev/null; then
    "$venv/bin/python" -m pip install -q --disable-pip-version-check \
        "schemathesis==$schemathesis_version" "openapi-spec-validator==$validator_version" >&2
fi

bin=${TENANCY_BIN:-}
if [ -z "$bin" ]; then
    cargo build --locked -q --bin tenancy
    bin="${CARGO_TARGET_DIR:-$PWD/target}/debug/tenancy"
fi

rm -rf "$out"
mkdir -p "$out"
cat >"$out/tenancy.toml" <<'EOF'
listen = "127.0.0.1:0"
workers = 2

[signup]
max_signups = 0
max_signups_per_ip = 0

[limits.signup]
per_ip_per_minute = 100000
per_ip_burst = 100000
global_per_minute = 100000
global_burst = 100000

[limits.availability]
per_ip_per_minute = 100000
per_ip_burst = 100000
global_per_minute = 100000
global_burst = 100000

[limits.public]
per_ip_per_minute = 100000
per_ip_burst = 100000
global_per_minute = 100000
global_burst = 100000

[plans.free]
max_users = 5

[plans.pro]
max_users = 100
EOF

: >"$out/serve.log"
"$bin" serve --config "$out/tenancy.toml" >"$out/serve.log" 2>&1 &
serve_pid=$!
stop() {
    if kill -0 "$serve_pid" 2>/dev/null; then
        kill -INT "$serve_pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$serve_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$serve_pid" 2>/dev/null || true
    fi
    wait "$serve_pid" 2>/dev/null || true
}
trap stop EXIT

base= token=
for _ in $(seq 1 600); do
    base=$(sed -n 's/^tenancy control plane on \(http:[^ ]*\)$/\1/p' "$out/serve.log" | head -1)
    token=$(sed -n 's/^admin token (shown once): //p' "$out/serve.log" | head -1)
    [ -n "$base" ] && [ -n "$token" ] && break
    if ! kill -0 "$serve_pid" 2>/dev/null; then
        echo "api-contract.sh: tenancy serve exited:" >&2
        cat "$out/serve.log" >&2
        exit 1
    fi
    sleep 0.1
done
if [ -z "$base" ] || [ -z "$token" ]; then
    echo "api-contract.sh: tenancy serve did not print its address and admin token within 60 s:" >&2
    cat "$out/serve.log" >&2
    exit 1
fi

"$venv/bin/python" -c 'import sys, urllib.request; open(sys.argv[2], "wb").write(urllib.request.urlopen(sys.argv[1]).read())' \
    "$base/openapi.json" "$out/openapi.json"
"$venv/bin/openapi-spec-validator" "$out/openapi.json"

# Every generated request that carries an Idempotency-Key gets a fresh one, as a client
# does for each new request (a reused key with another body is refused by design).
cat >"$out/hooks.py" <<'EOF'
import uuid

import schemathesis


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    headers = case.headers or {}
    value = headers.get("Idempotency-Key")
    if case.method.upper() == "POST" and isinstance(value, str) and 1 <= len(value) <= 255 \
            and all(0x21 <= ord(c) <= 0x7E for c in value):
        headers["Idempotency-Key"] = str(uuid.uuid4())
EOF

# The admin token through the document's own `admin` bearer scheme, so that requests
# without it (the missing-credential checks) really go without it.
cat >"$out/schemathesis.toml" <<'EOF'
[auth.openapi.admin]
bearer = "${TENANCY_CONTRACT_ADMIN_TOKEN}"

# Every check but the one that needs the credentials of a second user (there is one
# admin and no per-tenant resource here).
[checks]
object_level_authorization.enabled = false

# Five bodies have rules between their own parts that no JSON Schema can state, answered
# with 422 for a body that fits the schema: a flag's default, off and served variants must
# be among its variants and each rollout's weights sum to 10000; a setting's default must
# satisfy the setting's own schema (itself a valid JSON Schema); an override's expiry must
# be in the future; an insights snapshot's counts must agree (refusals <= errors <=
# statements, an error bound within its total, a latency sketch counting no more than the
# statements, no tenant twice); an anomaly detection's last hour must not precede its
# first. For those five operations 422 is an accepted answer to
# conforming data; every other check runs on them, and every other operation takes the
# defaults (a reference to a missing definition is 404, a value that does not fit a stored
# definition 409).
[[operations]]
include-path-regex = "^/v1/config/(flags/[^/]+|settings/[^/]+|tenants/[^/]+/overrides/[^/]+/[^/]+)$"
include-method-regex = "(?i)^put$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]

[[operations]]
include-path-regex = "^/v1/insights/(snapshots|anomalies)$"
include-method-regex = "(?i)^post$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]
# A batch past its item limit can also be past the 64 KiB body limit, which is refused
# (413) before the body is read: a rejection like the others.
checks.negative_data_rejection.expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]
EOF

start=$(date +%s)
set +e
# From target/api-contract, where schemathesis keeps its cache.
cd "$out"
TENANCY_CONTRACT_ADMIN_TOKEN="$token" SCHEMATHESIS_HOOKS=hooks PYTHONPATH="$out" \
    "$venv/bin/st" --config-file "$out/schemathesis.toml" run "$base/openapi.json" \
    --max-examples "$examples" \
    --seed "$seed" \
    --workers 1 \
    --request-timeout 30 \
    --phases examples,coverage,fuzzing \
    --suppress-health-check all \
    --report junit --report-dir "$out" \
    2>&1 | tee "$out/schemathesis.log"
status=${PIPESTATUS[0]}
set -e
echo "api-contract.sh: schemathesis took $(($(date +%s) - start)) s (exit $status)" >&2
if [ "$status" -ne 0 ]; then
    echo "api-contract.sh: tenancy serve's log is in $out/serve.log" >&2
fi
exit "$status"
