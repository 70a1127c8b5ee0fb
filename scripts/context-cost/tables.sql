-- Tables of the context cost probe: the same 20,000 rows three times, under the
-- installed context's policy (items), under the naive policy on a GUC (items_naive), and
-- without RLS (items_plain). Run by the superuser after the runtime schema is installed.
SET ROLE tenancy_owner;
CREATE TABLE items (tenant_id uuid NOT NULL, id bigint NOT NULL, payload text NOT NULL, PRIMARY KEY (tenant_id, id));
SELECT tenancy.make_tenant_table('items');
CREATE TABLE items_plain (LIKE items INCLUDING ALL);
GRANT SELECT ON items_plain TO tenancy_app;
CREATE TABLE items_naive (LIKE items INCLUDING ALL);
ALTER TABLE items_naive ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY naive ON items_naive USING (tenant_id = current_setting('app.tenant_id')::uuid);
GRANT SELECT ON items_naive TO tenancy_app;
RESET ROLE;
INSERT INTO items SELECT ('00000000-0000-0000-0000-' || lpad(t::text, 12, '0'))::uuid, i, 'payload ' || i
  FROM generate_series(1, 20) t, generate_series(1, 1000) i;
INSERT INTO items_plain SELECT * FROM items;
INSERT INTO items_naive SELECT * FROM items;

-- A v2 token (bound to this backend and transaction) for tenant t, signed with the key
-- 'k1' that the script installs: what the SDK sends behind a pooler. Its own cost is
-- measured alone (scenario `sign`) and subtracted.
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
    -- A v1 token (bound to this backend) for tenant t: what the SDK passes to
    -- tenancy.init_session() once per connection.
    EXECUTE format($f$
CREATE FUNCTION public.sign_token_v1(t int) RETURNS text LANGUAGE plpgsql AS $body$
DECLARE
    now_us bigint := (extract(epoch FROM clock_timestamp()) * 1000000)::bigint;
    msg text := 'v1.k1.00000000-0000-0000-0000-' || lpad(t::text, 12, '0') || '.' || pg_backend_pid() || '.'
        || now_us || '.' || (now_us + 60000000);
BEGIN
    RETURN msg || '.' || encode(sha256('\x%s'::bytea || sha256('\x%s'::bytea || convert_to(msg, 'UTF8'))), 'hex');
END
$body$$f$, op, ip);
    -- A v3 token (single-use by a random nonce, bound to no backend) for tenant t: what
    -- the SDK sends behind a pooler whose server keeps the replay registry.
    EXECUTE format($f$
CREATE FUNCTION public.sign_token_v3(t int) RETURNS text LANGUAGE plpgsql AS $body$
DECLARE
    now_us bigint := (extract(epoch FROM clock_timestamp()) * 1000000)::bigint;
    msg text := 'v3.k1.00000000-0000-0000-0000-' || lpad(t::text, 12, '0') || '.'
        || replace(gen_random_uuid()::text, '-', '') || '.' || now_us || '.' || (now_us + 10000000);
BEGIN
    RETURN msg || '.' || encode(sha256('\x%s'::bytea || sha256('\x%s'::bytea || convert_to(msg, 'UTF8'))), 'hex');
END
$body$$f$, op, ip);
END
$mk$;
GRANT EXECUTE ON FUNCTION public.sign_token(int), public.sign_token_v1(int), public.sign_token_v3(int) TO tenancy_app;
ANALYZE;
