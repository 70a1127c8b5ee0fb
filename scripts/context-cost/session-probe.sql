-- A design probe, not installed by the product: a PL/pgSQL context whose per-transaction
-- state lives in temporary sequences instead of a hashed setting, entered with a
-- per-session secret that rotates on every use. Measured beside the installed context
-- by scripts/context-cost.sh (scenario `probe`).
--
--   tenancy.enter_s(hi, lo, secret) -> next secret: the tenant as two int8, the secret
--     the previous call returned (0 on a new session, in this probe only). State: temp
--     sequences created by the owner on first use; setval on a temporary sequence needs no
--     transaction id and works in read-only transactions; it is not undone by ROLLBACK, so
--     the transaction it belongs to is stored beside it (a hash of its start).
--   tenancy.current_tenant_id_s(): an inlinable SQL function (no plpgsql call, no SECURITY
--     DEFINER): currval of the session's own sequences, readable by the runtime role
--     (SELECT only: no nextval, no setval), NULL when they do not exist or belong to
--     another transaction.
SET ROLE tenancy_owner;
CREATE FUNCTION tenancy.enter_s(hi int8, lo int8, s int8) RETURNS int8
LANGUAGE plpgsql VOLATILE SECURITY DEFINER AS $fn$
DECLARE
    n pg_catalog.int8;
BEGIN
    IF pg_catalog.to_regclass('pg_temp.tenancy_ctx_secret') IS NULL THEN
        CREATE TEMP SEQUENCE tenancy_ctx_secret MINVALUE -9223372036854775808;
        CREATE TEMP SEQUENCE tenancy_ctx_hi MINVALUE -9223372036854775808;
        CREATE TEMP SEQUENCE tenancy_ctx_lo MINVALUE -9223372036854775808;
        CREATE TEMP SEQUENCE tenancy_ctx_tx MINVALUE -9223372036854775808;
        GRANT SELECT ON pg_temp.tenancy_ctx_hi, pg_temp.tenancy_ctx_lo, pg_temp.tenancy_ctx_tx TO tenancy_app;
        n := pg_catalog.setval('pg_temp.tenancy_ctx_secret'::pg_catalog.regclass, 0);
    END IF;
    IF s OPERATOR(pg_catalog.<>) pg_catalog.currval('pg_temp.tenancy_ctx_secret'::pg_catalog.regclass) THEN
        n := pg_catalog.setval('pg_temp.tenancy_ctx_secret'::pg_catalog.regclass,
                               pg_catalog.uuid_hash_extended(pg_catalog.gen_random_uuid(), 0));
        RAISE EXCEPTION USING ERRCODE = '28000', MESSAGE = 'tenancy: wrong session secret';
    END IF;
    n := pg_catalog.setval('pg_temp.tenancy_ctx_hi'::pg_catalog.regclass, hi);
    n := pg_catalog.setval('pg_temp.tenancy_ctx_lo'::pg_catalog.regclass, lo);
    n := pg_catalog.setval('pg_temp.tenancy_ctx_tx'::pg_catalog.regclass,
        pg_catalog.hashfloat8extended(pg_catalog.date_part('epoch', pg_catalog.transaction_timestamp()), 0));
    RETURN pg_catalog.setval('pg_temp.tenancy_ctx_secret'::pg_catalog.regclass,
                             pg_catalog.uuid_hash_extended(pg_catalog.gen_random_uuid(), 0));
END
$fn$;
CREATE FUNCTION tenancy.current_tenant_id_s() RETURNS uuid LANGUAGE sql VOLATILE AS $fn$
SELECT CASE WHEN pg_catalog.currval(pg_catalog.to_regclass('pg_temp.tenancy_ctx_tx')) OPERATOR(pg_catalog.=)
                 pg_catalog.hashfloat8extended(pg_catalog.date_part('epoch', pg_catalog.transaction_timestamp()), 0)
  THEN pg_catalog.encode(pg_catalog.int8send(pg_catalog.currval(pg_catalog.to_regclass('pg_temp.tenancy_ctx_hi')))
       OPERATOR(pg_catalog.||) pg_catalog.int8send(pg_catalog.currval(pg_catalog.to_regclass('pg_temp.tenancy_ctx_lo'))),
       'hex')::pg_catalog.uuid END
$fn$;
GRANT EXECUTE ON FUNCTION tenancy.enter_s(int8, int8, int8), tenancy.current_tenant_id_s() TO tenancy_app;
CREATE TABLE items_probe (LIKE items INCLUDING ALL);
ALTER TABLE items_probe ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY probe ON items_probe USING (tenant_id = (SELECT tenancy.current_tenant_id_s()));
GRANT SELECT ON items_probe TO tenancy_app;
RESET ROLE;
INSERT INTO items_probe SELECT * FROM items;
ANALYZE items_probe;
