#!/usr/bin/env bash
# Server-side cost of a tenant context, in CPU instructions per transaction, counted by
# valgrind (cachegrind) in the PostgreSQL backend: exact and repeatable on a shared,
# noisy machine, where timings are not. One private cluster (PG_BIN, default Debian's
# PostgreSQL 15) runs under valgrind; pgbench (prepared statements, one client) runs each
# scenario twice, with 200 and 1,200 transactions, and the difference of the backend's
# counts divided by 1,000 is the cost of one transaction, without connection start-up.
#
# Databases: `plpgsql` has the PL/pgSQL context of crates/tenancy-sdk/sql/runtime.sql;
# `native` has the C context (the tenancy_context library must be installed in the
# server: see extensions/). The cluster, the counting and the token signers are those of
# scripts/lib/.
# Scenarios (each BEGIN … COMMIT, tenant and row chosen at random):
#   empty       SELECT 1
#   plain       the point read on a table without RLS, tenant predicate written out
#   naive       set_config('app.tenant_id') then the read under a current_setting policy
#   sign        a v2 token signed in SQL (what the context scenarios pay on top; subtracted)
#   enter       tenancy.enter(token), no read (the opening behind a transaction-mode pooler)
#   context     tenancy.enter(token) then the read under the installed policy
#   session_enter / session   the same with the session context of direct connections
#               (PL/pgSQL: tenancy.enter_session(hi, lo, secret, next), `next` drawn by
#               pgbench and carried to the next call as its secret;
#               tenancy.init_session(v1 token) once per connection)
# Behind a transaction-mode pooler with the replay registry (native only; the SDK's
# implicit read-only point read: one pipeline, one Sync, no BEGIN, every statement
# unnamed, as the SDK sends it through PgBouncer; pgbench -M extended):
#   pooled_empty  SELECT 1
#   pooled_plain  the point read without RLS, tenant predicate written out (the bare query)
#   sign3         a v3 (single-use) token signed in SQL (subtracted, less pooled_empty)
#   pooled_sql    the opening of tenancy_context 1.0: SET statement_timeout, then
#                 SELECT pg_backend_pid(), tenancy.enter_read_only(token) and four
#                 set_config(…, true), then the read
#   pooled_call   the opening of 1.1: SELECT tenancy.enter_pooled(token, …), then the read
# Output: one line per scenario, then the overhead of each context over `plain`.
#
# The server preloads the library (shared_preload_libraries, the replay registry):
# PG_BIN's server must have the current one installed (make -C extensions/tenancy_context
# install). CONTEXT_COST_SCENARIOS="sign3 pooled_sql …" measures only those (native).
#
#   scripts/context-cost.sh                 # about 6 minutes
#   PG_BIN=/path/to/bin scripts/context-cost.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
pg_bin=${PG_BIN:-/usr/lib/postgresql/15/bin}
work=${CONTEXT_COST_DIR:-$root/target/context-cost}
port=${CONTEXT_COST_PORT:-55499}
cost_name=context-cost.sh
# shellcheck source=lib/cost.sh
. scripts/lib/cost.sh
cost_need valgrind pgbench psql
valgrind_tool=(--tool=cachegrind --cache-sim=no --cachegrind-out-file="$work/cg/cg.%p")
server_options=(-c shared_preload_libraries=tenancy_context)
cost_start_server

sql=crates/tenancy-sdk/sql
psql_su -d postgres -f "$sql/bootstrap.sql"
for db in plpgsql native; do
    psql_su -d postgres -c "CREATE DATABASE $db"
    sed "s/:dbname/$db/g" "$sql/database.sql" | psql_su -d "$db" -f -
    psql_su -d "$db" -c "GRANT TEMPORARY ON DATABASE $db TO tenancy_owner"
done
# The native context as the bootstrap installs it where the server offers the extension
# (`make -C extensions/tenancy_context install` for this server).
psql_su -d native -c "CREATE EXTENSION tenancy_context"
psql_su -d plpgsql -c "SET ROLE tenancy_owner" -c "SET tenancy.runtime_impl = 'plpgsql'" -f "$sql/runtime.sql"
psql_su -d native -c "SET ROLE tenancy_owner" -f "$sql/runtime.sql"
for db in plpgsql native; do
    psql_su -d "$db" -c "SELECT tenancy.install_context_key('k1', repeat('ab', 32))" -f scripts/context-cost/tables.sql \
        -f scripts/lib/sign-tokens.sql
done
impl=$(cost_context_impl native)

scenario() {
    local name=$1 body=$2
    printf '\\set t random(1, 20)\n\\set id random(1, 1000)\nBEGIN;\n%s\nCOMMIT;\n' "$body" >"$work/$name.sql"
}
uuid="('00000000-0000-0000-0000-' || lpad(:t::text, 12, '0'))::uuid"
scenario empty 'SELECT 1;'
scenario plain "SELECT payload FROM items_plain WHERE tenant_id = $uuid AND id = :id;"
scenario naive "SELECT set_config('app.tenant_id', '00000000-0000-0000-0000-' || lpad(:t::text, 12, '0'), true);
SELECT payload FROM items_naive WHERE id = :id;"
scenario sign 'SELECT sign_token(:t);'
scenario enter 'SELECT tenancy.enter(sign_token(:t));'
scenario context 'SELECT tenancy.enter(sign_token(:t));
SELECT payload FROM items WHERE id = :id;'
# pgbench runs a script per transaction: the session's first one (secret still 0, from
# -D) initialises it.
init='\if :secret = 0
SELECT tenancy.init_session(sign_token_v1(1)) AS secret \gset
\endif
\set next random(1, 9000000000000000000)'
scenario session_enter "$init
SELECT tenancy.enter_session(0, :t, :secret, :next) AS secret \gset"
# An implicit transaction in one pipeline (the pooled openings): no BEGIN, one Sync.
pipelined() {
    local name=$1 body=$2
    printf '\\set t random(1, 20)\n\\set id random(1, 1000)\n\\startpipeline\n%s\n\\endpipeline\n' "$body" >"$work/$name.sql"
}
pipelined pooled_plain "SELECT payload FROM items_plain WHERE tenant_id = $uuid AND id = :id;"
pipelined pooled_empty 'SELECT 1;'
pipelined sign3 'SELECT sign_token_v3(:t);'
pipelined pooled_sql "SET statement_timeout = 30000;
SELECT pg_catalog.pg_backend_pid(), tenancy.enter_read_only(sign_token_v3(:t)), pg_catalog.set_config('statement_timeout', '30000', true), pg_catalog.set_config('lock_timeout', '10000', true), pg_catalog.set_config('row_security', 'on', true), pg_catalog.set_config('client_min_messages', 'notice', true);
SELECT payload FROM items WHERE id = :id;"
pipelined pooled_call "SELECT tenancy.enter_pooled(sign_token_v3(:t), true, 30000, 10000, NULL, NULL, NULL);
SELECT payload FROM items WHERE id = :id;"
scenario session "$init
SELECT tenancy.enter_session(0, :t, :secret, :next) AS secret \gset
SELECT payload FROM items WHERE id = :id;"

declare -A cost
measure() {
    local key="$2/$1" a b mode=prepared
    case $1 in pooled_*|sign3) mode=extended ;; esac
    cost_count "$1" "$2" 200 -D secret=0 -M "$mode"
    a=$instructions
    cost_count "$1" "$2" 1200 -D secret=0 -M "$mode"
    b=$instructions
    cost[$key]=$(( (b - a) / 1000 ))
    printf '%-10s %-20s %9d instructions per transaction\n' "$2" "$1" "${cost[$key]}"
}
if [ -n "${CONTEXT_COST_SCENARIOS:-}" ]; then
    for s in $CONTEXT_COST_SCENARIOS; do measure "$s" native; done
    exit 0
fi
for s in empty plain naive sign enter context session_enter session; do measure "$s" plpgsql; done
for s in empty plain sign enter context pooled_empty pooled_plain sign3 pooled_sql pooled_call; do measure "$s" native; done
echo
echo "overhead over plain (the read alone), per transaction:"
p=plpgsql
printf '  naive (set_config + policy on a setting)      %9d\n' $(( cost[$p/naive] - cost[$p/plain] ))
printf '  PL/pgSQL token context (enter + read)        %9d   (enter alone %d)\n' \
    $(( cost[$p/context] - cost[$p/sign] + cost[$p/empty] - cost[$p/plain] )) $(( cost[$p/enter] - cost[$p/sign] + cost[$p/empty] - cost[$p/empty] ))
printf '  PL/pgSQL session context (enter + read)      %9d   (enter alone %d)\n' \
    $(( cost[$p/session] - cost[$p/plain] )) $(( cost[$p/session_enter] - cost[$p/empty] ))
printf '  %s context on database native (enter + read) %9d   (enter alone %d)\n' "$impl" \
    $(( cost[native/context] - cost[native/sign] + cost[native/empty] - cost[native/plain] )) $(( cost[native/enter] - cost[native/sign] ))
n=native
sign3=$(( cost[$n/sign3] - cost[$n/pooled_empty] ))
printf '  pooled opening + RLS read over the bare read, 1.0 (SET, enter_read_only, set_config x4) %9d\n' \
    $(( cost[$n/pooled_sql] - sign3 - cost[$n/pooled_plain] ))
printf '  pooled opening + RLS read over the bare read, 1.1 (tenancy.enter_pooled)              %9d\n' \
    $(( cost[$n/pooled_call] - sign3 - cost[$n/pooled_plain] ))
