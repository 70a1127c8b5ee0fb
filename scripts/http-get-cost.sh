#!/usr/bin/env bash
# Client-side cost of one http_get request, in CPU instructions counted by valgrind
# (cachegrind) in the benchmark's own process: exact and repeatable on a shared, noisy
# machine, where requests per second are not. PostgreSQL runs in processes valgrind does
# not follow, so the figure is what the application pays: HTTP client and server, the
# tenancy layer (or its absence), pool and driver. Each variant runs twice, with 200 and
# 1,200 requests after the same warm-up (`tenancy-bench http_get_count`), and the
# difference divided by 1,000 is one request, without start-up and set-up.
#
#   scripts/http-get-cost.sh                      # builds and measures this checkout
#   scripts/http-get-cost.sh path/to/tenancy-bench [more binaries to compare…]
#   VARIANTS="ours ours_recording" scripts/http-get-cost.sh   # the access recording's cost
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "http-get-cost.sh: valgrind is needed (apt-get install -y valgrind)" >&2; exit 2; }
if [ $# -eq 0 ]; then
    cargo build --release -p tenancy-bench >&2
    set -- "${CARGO_TARGET_DIR:-target}/release/tenancy-bench"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
count() { # binary variant requests → instructions of the whole process
    valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file="$work/cg" \
        "$1" http_get_count --only "$2" --requests "$3" >"$work/out" 2>&1 ||
        { cat "$work/out" >&2; return 1; }
    sed -n 's/^summary: //p' "$work/cg"
}
for bin in "$@"; do
    for variant in ${VARIANTS:-ours bare}; do
        small=$(count "$bin" "$variant" 200)
        large=$(count "$bin" "$variant" 1200)
        echo "$bin $variant: $(( (large - small) / 1000 )) instructions per request"
    done
done
