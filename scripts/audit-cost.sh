#!/usr/bin/env bash
# Server-side cost of recording an audit event, in CPU instructions per transaction,
# counted by valgrind in the PostgreSQL backend: exact and repeatable on a shared, noisy
# machine, where timings are not. One private cluster (PG_BIN, default Debian's
# PostgreSQL 15) runs under valgrind; pgbench (prepared statements, one client, runtime
# role) runs each scenario twice, with 200 and 1,200 transactions, and the difference of
# the backend's counts divided by 1,000 is the cost of one transaction, without
# connection start-up.
#
# The database has the native context (the tenancy_context library must be installed in
# the server: see extensions/), the tenancy runtime, the benchmark's write table and the
# audit table exactly as tenancy-audit installs it (crates/tenancy-audit/sql/audit.sql
# with the catalog's column fragment in place of its marker). The cluster, the counting
# and the token signer are those of scripts/lib/.
# Scenarios (each BEGIN … COMMIT, tenant among 100 and row chosen at random), those of
# the `audit_append` benchmark:
#   plain     tenancy.enter(token), the INSERT of a row
#   audited   the same, then the INSERT of its audit event (the statement
#             tenancy_audit::record sends: the columns the event has, `after` a jsonb)
#   event     tenancy.enter(token) and the event's INSERT alone
#   appended  the write, then the same event through tenancy.audit_append (what
#             tenancy_audit::record sends where the database has it: the tenancy_context
#             extension from version 1.3); only where the server offers that version
#   append    tenancy.enter(token) and the tenancy.audit_append call alone (idem)
# Output: one line per scenario, then what the event adds to the write.
# With AUDIT_COST_PROFILE=1 the server runs under callgrind instead, and the functions
# whose inclusive instructions per transaction grow most from `plain` to `audited` are
# listed as well (AUDIT_COST_PROFILE_OF=appended: those that grow from `plain` to
# `appended`).
#
#   scripts/audit-cost.sh                   # about a minute
#   AUDIT_COST_PROFILE=1 scripts/audit-cost.sh   # about two
#   PG_BIN=/path/to/bin scripts/audit-cost.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
pg_bin=${PG_BIN:-/usr/lib/postgresql/15/bin}
work=${AUDIT_COST_DIR:-$root/target/audit-cost}
port=${AUDIT_COST_PORT:-55497}
profile=${AUDIT_COST_PROFILE:-0}
profiled=${AUDIT_COST_PROFILE_OF:-audited}
cost_name=audit-cost.sh
# shellcheck source=lib/cost.sh
. scripts/lib/cost.sh
cost_need valgrind pgbench psql
if [ "$profile" = 1 ]; then
    command -v callgrind_annotate >/dev/null || cost_fail "callgrind_annotate is needed (valgrind)"
    valgrind_tool=(--tool=callgrind --callgrind-out-file="$work/cg/cg.%p")
else
    valgrind_tool=(--tool=cachegrind --cache-sim=no --cachegrind-out-file="$work/cg/cg.%p")
fi
cost_start_server

sql=crates/tenancy-sdk/sql
db=audit
psql_su -d postgres -f "$sql/bootstrap.sql"
psql_su -d postgres -c "CREATE DATABASE $db"
sed "s/:dbname/$db/g" "$sql/database.sql" | psql_su -d "$db" -f -
# The native context as the bootstrap installs it where the server offers the extension
# (`make -C extensions/tenancy_context install` for this server).
psql_su -d "$db" -c "CREATE EXTENSION tenancy_context"
# The newest version the server offers, as the bootstrap's ALTER EXTENSION … UPDATE would
# where it is the default (1.3 adds tenancy.audit_append).
psql_su -d "$db" -c "DO \$\$ BEGIN IF EXISTS (SELECT 1 FROM pg_available_extension_versions
    WHERE name = 'tenancy_context' AND version = '1.3') THEN ALTER EXTENSION tenancy_context UPDATE TO '1.3'; END IF; END \$\$"
append=$(psql -X -qAt -h "$work" -p "$port" -U postgres -d "$db" \
    -c "SELECT to_regprocedure('tenancy.audit_append(uuid,text,text,text,text,text,text,jsonb,jsonb,text,text,inet)') IS NOT NULL")
psql_su -d "$db" -c "SET ROLE tenancy_owner" -f "$sql/runtime.sql"
psql_su -d "$db" -c "SELECT tenancy.install_context_key('k1', repeat('ab', 32))"
# audit.sql with the column fragment in place of its marker line, as tenancy_audit::install
# runs it (as the owner role).
columns=$(cat crates/tenancy-catalog/sql/audit_event_columns.sql)
audit_sql=$(awk -v cols="$columns" '$0 ~ /^\{\{audit_event_columns\}\}$/ { print cols; next } { print }' \
    crates/tenancy-audit/sql/audit.sql)
printf 'SET ROLE tenancy_owner;\n%s\n' "$audit_sql" | psql_su -d "$db" -f -
psql_su -d "$db" -c "SET ROLE tenancy_owner" -f crates/tenancy-bench/sql/audit_bench_writes.sql \
    -c "RESET ROLE" -f scripts/lib/sign-tokens.sql -c ANALYZE
impl=$(cost_context_impl "$db")
[ "$impl" = c ] || cost_fail "the native context did not install (tenancy.enter is $impl)"

# Each transaction first computes its values in one SELECT (both scenarios pay for it),
# so the INSERTs take them as parameters, as the SDK sends them.
scenario() {
    local name=$1 body=$2
    printf '%s\n' '\set t random(1, 100)' '\set id random(1, 1000000)' 'BEGIN;' \
        "SELECT '00000000-0000-0000-0000-' || lpad(:t::text, 12, '0') AS tenant, 'item ' || :id || ' updated' AS body,
    'item:' || :id AS target, '{\"item\": ' || :id || ', \"body\": \"item ' || :id || ' updated\"}' AS after,
    'user' AS kind, 'bench-user' AS subject, 'item.update' AS action, 'bench' AS request, 'success' AS outcome \\gset" \
        'SELECT tenancy.enter(sign_token(:t));' "$body" 'COMMIT;' >"$work/$name.sql"
}
write="INSERT INTO audit_bench_writes (item, body) VALUES (:id, :body);"
# The event of the benchmark: actor, action, target, `after` a jsonb, request id; the
# INSERT names only those columns, as tenancy_audit sends it (absent fields unnamed).
event="INSERT INTO tenancy.audit_events (tenant_id, actor_kind, action, outcome, actor_subject, target, after,
    request_id)
VALUES (:tenant, :kind, :action, :outcome, :subject, :target, :after, :request);"
scenario plain "$write"
scenario audited "$write
$event"
scenario event "$event"
# The same event through tenancy.audit_append: every argument, NULL for an absent field.
call="SELECT tenancy.audit_append(:tenant, :kind, :action, :outcome, :subject, NULL, :target, NULL, :after,
    :request, NULL, NULL);"
scenarios=(plain audited event)
if [ "$append" = t ]; then
    scenario appended "$write
$call"
    scenario append "$call"
    scenarios+=(appended append)
fi

declare -A cost files
measure() {
    local a b
    cost_count "$1" "$db" 200
    a=$instructions
    files[$1/200]=$file
    cost_count "$1" "$db" 1200
    b=$instructions
    files[$1/1200]=$file
    cost[$1]=$(( (b - a) / 1000 ))
    printf '%-10s %9d instructions per transaction\n' "$1" "${cost[$1]}"
}
for s in "${scenarios[@]}"; do measure "$s"; done
echo
printf 'the audit event adds %d instructions per transaction (audited - plain)\n' $(( cost[audited] - cost[plain] ))
if [ "$append" = t ]; then
    printf 'through tenancy.audit_append it adds %d (appended - plain)\n' $(( cost[appended] - cost[plain] ))
else
    echo "(the server has no tenancy.audit_append: tenancy_context 1.3 is not installed)"
fi

if [ "$profile" = 1 ]; then
    # Inclusive instructions per function: (1200-run - 200-run) / 1000, audited minus plain.
    python3 - "${files[$profiled/200]}" "${files[$profiled/1200]}" "${files[plain/200]}" "${files[plain/1200]}" <<'PY'
import collections, re, subprocess, sys
line = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(\S.*?)(\s+\[[^\]]*\])?\s*$")
def inclusive(path):
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", path],
                         capture_output=True, text=True, check=True).stdout
    d = collections.Counter()
    for l in out.splitlines():
        m = line.match(l)
        if m:
            d[m.group(2).split(":", 1)[-1]] += int(m.group(1).replace(",", ""))
    return d
a200, a1200, p200, p1200 = map(inclusive, sys.argv[1:5])
delta = {k: ((a1200[k] - a200[k]) - (p1200[k] - p200[k])) / 1000
         for k in set(a200) | set(a1200) | set(p200) | set(p1200)}
print("\nfunctions whose inclusive instructions per transaction grow most with the event:")
for k, v in sorted(delta.items(), key=lambda kv: -kv[1])[:50]:
    if not k.startswith("0x"):
        print(f"  {v:9.0f}  {k}")
PY
fi
