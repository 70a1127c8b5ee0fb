#!/usr/bin/env bash
# Compares `tenancy check` with pgrls (PyPI) on the tenancy-check corpus: one database per
# deliberately broken schema, plus two correct schemas, on a private PostgreSQL cluster.
#
# Prints: case | expected rule | tenancy flags? | pgrls flags?
#   tenancy flags?  yes = the expected rule fired on the expected object with the expected severity.
#   pgrls flags?    yes = pgrls reported a finding that it does not report on the correct
#                   tutorial schema (good_guc); the new rule ids are listed.
# For the correct schemas the columns list error-severity findings (tenancy) and all
# findings (pgrls) instead.
#
# Usage: scripts/compare-pgrls.sh            (from the workspace root; needs python3, cargo,
#                                             PostgreSQL server binaries and PyPI access)
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${CARGO_TARGET_DIR:-target}"
VENV=target/pgrls-venv

if [ ! -x "$VENV/bin/pgrls" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q pgrls
fi
echo "pgrls: $("$VENV/bin/pgrls" --version)" >&2

CARGO_TARGET_DIR="$TARGET" cargo build -q -p tenancy-check --examples
CHECK="$TARGET/debug/examples/check"
CORPUS="$TARGET/debug/examples/corpus"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# Start the corpus cluster; it stays up until its stdin closes.
coproc CORPUS_PROC { "$CORPUS"; }
CASES="$WORK/cases.tsv"
: > "$CASES"
while IFS= read -r line <&"${CORPUS_PROC[0]}"; do
  [ "$line" = READY ] && break
  printf '%s\n' "$line" >> "$CASES"
done

while IFS=$'\t' read -r name rule object severity role url schemas; do
  "$CHECK" --database-url "$url" --runtime-role "$role" --format json > "$WORK/$name.tenancy.json" 2>"$WORK/$name.tenancy.err" || true
  "$VENV/bin/pgrls" lint --database-url "$url" --schemas "$schemas" --format json \
    > "$WORK/$name.pgrls.json" 2>"$WORK/$name.pgrls.err" || true
done < "$CASES"

# Stop the cluster.
exec {CORPUS_PROC[1]}>&-
wait "$CORPUS_PROC_PID" 2>/dev/null || true

python3 - "$WORK" "$CASES" <<'PY'
import json, sys, os
work, cases = sys.argv[1], sys.argv[2]

def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except Exception:
        return None

def pgrls_rules(doc):
    """Set of (rule, table) pgrls reported."""
    out = set()
    if doc is None:
        return out
    items = doc if isinstance(doc, list) else (doc.get("violations") or doc.get("findings") or doc.get("results") or [])
    for v in items:
        rule = v.get("rule_id") or v.get("rule") or v.get("code") or v.get("id")
        tbl = v.get("table") or v.get("object") or v.get("relation") or ""
        if isinstance(tbl, dict):
            tbl = tbl.get("name", "")
        out.add((str(rule), str(tbl)))
    return out

rows = [l.rstrip("\n").split("\t") for l in open(cases) if l.strip()]
base = pgrls_rules(load(os.path.join(work, "good_guc.pgrls.json")))
base_ids = {r for r, _ in base}
print("| case | expected rule | tenancy flags? | pgrls flags? |")
print("|---|---|---|---|")
t_yes = p_yes = n = 0
for name, rule, obj, sev, role, url, schemas in rows:
    t = load(os.path.join(work, f"{name}.tenancy.json"))
    p = load(os.path.join(work, f"{name}.pgrls.json"))
    pr = pgrls_rules(p)
    if rule == "(none)":
        errs = sorted({f["rule"] for f in (t or {}).get("findings", []) if f["severity"] == "error"}) if t else ["(did not run)"]
        tcol = "no errors" if not errs else "errors: " + ", ".join(errs)
        pcol = ("findings: " + ", ".join(sorted({r for r, _ in pr}))) if pr else ("none" if p is not None else "(did not run)")
        print(f"| {name} (correct) | — | {tcol} | {pcol} |")
        continue
    n += 1
    hit = t is not None and any(f["rule"] == rule and f["object"] == obj and f["severity"] == sev for f in t.get("findings", []))
    t_yes += hit
    new = sorted({r for r, _ in pr} - base_ids)
    if p is None:
        pcol = "(did not run)"
    elif new:
        pcol = "yes (" + ", ".join(new) + ")"
        p_yes += 1
    else:
        pcol = "no"
    print(f"| {name} | {rule} ({sev}) | {'yes' if hit else 'NO'} | {pcol} |")
print(f"\nbroken cases: {n}; tenancy check flags {t_yes}/{n}; pgrls flags {p_yes}/{n}")
PY
