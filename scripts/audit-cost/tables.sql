-- Tables of the audit cost probe: the benchmark's write table (a tenant table) and the
-- audit table as tenancy-audit installs it (the owner's part is piped in before this
-- file). Run by the superuser after the runtime schema is installed.
SET ROLE tenancy_owner;
CREATE TABLE audit_bench_writes (
    tenant_id uuid NOT NULL,
    id        bigint GENERATED ALWAYS AS IDENTITY,
    item      bigint NOT NULL,
    body      text NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
SELECT tenancy.make_tenant_table('audit_bench_writes');
RESET ROLE;

-- A v2 token (bound to this backend and transaction) for tenant t, signed with the key
-- 'k1' that the script installs: what the SDK's opening sends. Both scenarios pay for it.
DO $mk$
DECLARE
    ip text;
    op text;
BEGIN
    SELECT encode(ipad, 'hex'), encode(opad, 'hex') INTO ip, op FROM tenancy_private.context_keys WHERE kid = 'k1';
    EXECUTE format($f$
CREATE FUNCTION public.sign_token(t int) RETURNS text LANGUAGE plpgsql AS $body$
DECLARE
    msg text := 'v2.k1.00000000-0000-0000-0000-' || lpad(t::text, 12, '0') || '.' || pg_backend_pid() || '-'
        || encode(timestamptz_send(transaction_timestamp()), 'hex') || '.1.'
        || ((extract(epoch FROM clock_timestamp()) + 60) * 1000000)::bigint;
BEGIN
    RETURN msg || '.' || encode(sha256('\x%s'::bytea || sha256('\x%s'::bytea || convert_to(msg, 'UTF8'))), 'hex');
END
$body$$f$, op, ip);
END
$mk$;
GRANT EXECUTE ON FUNCTION public.sign_token(int) TO tenancy_app;
