# Shared by the instruction-count probes (scripts/audit-cost.sh, scripts/context-cost.sh):
# a private PostgreSQL cluster whose backends run under valgrind, and the count of one
# pgbench run's backend. Sourced, not run; the caller has set `work` (its scratch
# directory, emptied here), `port`, `pg_bin` and `valgrind_tool` (valgrind's tool
# options, ending with the output file pattern `$work/cg/cg.%p`), optionally
# `server_options` (more `-c name=value` for the server), and runs from the repository
# root.

# "NAME: message" on stderr, then exit 2 (the probe cannot run here).
cost_fail() {
    echo "$cost_name: $1" >&2
    exit 2
}

# Fails unless every named command is on PATH.
cost_need() {
    local t
    for t in "$@"; do
        command -v "$t" >/dev/null || cost_fail "$t is needed (apt-get install -y $t)"
    done
}

# Starts the cluster under valgrind and waits until it accepts connections; it is
# stopped on exit, after which valgrind has written its last counts. As root, PostgreSQL
# runs as TENANCY_PG_USER (default postgres).
cost_start_server() {
    run_as=()
    if [ "$(id -u)" = 0 ]; then
        user=${TENANCY_PG_USER:-postgres}
        id "$user" >/dev/null 2>&1 || cost_fail "as root, PostgreSQL runs as an unprivileged user; none named $user"
        run_as=(runuser -u "$user" --)
    fi
    rm -rf "$work"
    mkdir -p "$work/cg"
    [ ${#run_as[@]} -eq 0 ] || chown -R "$user" "$work"
    "${run_as[@]}" "$pg_bin/initdb" -D "$work/data" -A trust -U postgres >/dev/null
    "${run_as[@]}" valgrind "${valgrind_tool[@]}" --trace-children=yes "$pg_bin/postgres" -D "$work/data" -p "$port" -k "$work" \
        -c listen_addresses= -c autovacuum=off -c shared_buffers=128MB ${server_options[@]+"${server_options[@]}"} \
        >"$work/server.log" 2>&1 &
    server=$!
    trap cost_stop_server EXIT
    for _ in $(seq 1 600); do
        psql -X -q -h "$work" -p "$port" -U postgres -d postgres -c 'SELECT 1' >/dev/null 2>&1 && break
        sleep 0.2
    done
}

# The postmaster runs under runuser and valgrind: pg_ctl stops it (a signal to runuser
# would not reach it), then this waits for valgrind to write its last counts.
cost_stop_server() {
    "${run_as[@]}" "$pg_bin/pg_ctl" -D "$work/data" -m fast -w stop >/dev/null 2>&1 || kill -TERM "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
}

# psql as the superuser, stopping at the first error, output discarded.
psql_su() { psql -X -q -v ON_ERROR_STOP=1 -h "$work" -p "$port" -U postgres "$@" >/dev/null; }

# The language of tenancy.enter(text) in database $1 (`c` for the native context).
cost_context_impl() {
    psql -X -At -h "$work" -p "$port" -U postgres -d "$1" -c \
        "SELECT l.lanname FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang WHERE p.oid = 'tenancy.enter(text)'::regprocedure"
}

# Instructions of the backend that ran `$3` transactions of the pgbench script
# `$work/$1.sql` on database $2 as the runtime role (further arguments go to pgbench; a
# later `-M` overrides the prepared mode):
# the largest count among the processes that ended meanwhile (autovacuum is off). Sets
# `instructions` to it and `file` to that process's valgrind output.
cost_count() {
    local name=$1 db=$2 n=$3 before after f v
    shift 3
    before=$(ls "$work/cg")
    pgbench -n -M prepared "$@" -h "$work" -p "$port" -U tenancy_app -c 1 -t "$n" -f "$work/$name.sql" "$db" \
        >"$work/pgbench.log" 2>&1 || { cat "$work/pgbench.log" >&2; exit 1; }
    for _ in $(seq 1 100); do
        after=$(comm -13 <(echo "$before") <(ls "$work/cg"))
        [ -n "$after" ] && break
        sleep 0.1
    done
    sleep 1
    instructions=0
    file=
    for f in $(comm -13 <(echo "$before") <(ls "$work/cg")); do
        v=$(sed -n 's/^summary: //p' "$work/cg/$f")
        if [ "${v:-0}" -gt "$instructions" ]; then instructions=$v; file=$work/cg/$f; fi
    done
}
