-- The write table of the audit benchmarks (`tenancy-bench audit_append` and
-- scripts/audit-cost.sh): a tenant table whose rows the audited scenarios record an
-- event for. Run as the owner role after the runtime schema is installed.
CREATE TABLE IF NOT EXISTS audit_bench_writes (
    tenant_id uuid NOT NULL,
    id        bigint GENERATED ALWAYS AS IDENTITY,
    item      bigint NOT NULL,
    body      text NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
SELECT tenancy.make_tenant_table('audit_bench_writes');
