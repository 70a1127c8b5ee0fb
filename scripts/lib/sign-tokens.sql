-- Token signers of the instruction-count probes, for tenant t, signed with the key 'k1'
-- that the probes install (run by the superuser after the key is installed):
-- sign_token(t), a v2 token bound to this backend and transaction, what the SDK's
-- opening sends; sign_token_v1(t), a v1 token bound to this backend, what the SDK passes
-- to tenancy.init_session() once per connection.
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
