-- tenancy runtime schema: the signed tenant context and the tenant-table helper.
-- Run as tenancy_owner in every database that holds tenant rows. Idempotent.
--
-- How the context works (see ARCHITECTURE.md, "Signed tenant context"):
--   1. The SDK sends `BEGIN` and `SELECT tenancy.enter($1)` as prepared statements with the
--      token as a bound parameter, never as SQL text: no view, statistic or statement log
--      line shows it.
--   2. tenancy.enter checks the token's HMAC (key in tenancy_private.context_keys, which
--      the runtime role cannot read), that it is bound to this backend, that it has not
--      expired, and that it was issued after the last token this backend accepted
--      (tokens are single-use, see tenancy.last_issued below). It then stores
--      `<tenant>.<binding>` in the transaction-local setting tenancy.ctx, where binding is
--      a keyed hash, with a key that never leaves this database, over tenant, backend pid
--      and transaction start time.
--   3. RLS policies call (SELECT tenancy.current_tenant_id()), which recomputes the
--      binding once per statement. Anything else in tenancy.ctx (a raw tenant id, a
--      value copied from another transaction or connection) yields NULL: no rows.
--
-- Nothing the two functions hash or compare depends on a setting of the session: the
-- hashed values are binary (int4send, timestamptz_send) or text the token or the
-- functions themselves wrote, and both functions fix their own search_path.

CREATE TABLE IF NOT EXISTS tenancy_private.context_keys (
    kid        text PRIMARY KEY CHECK (kid ~ '^[a-z0-9]{1,16}$'),
    -- HMAC-SHA256 inner and outer padded keys, precomputed so verification is two sha256 calls.
    ipad       bytea NOT NULL CHECK (length(ipad) = 64),
    opad       bytea NOT NULL CHECK (length(opad) = 64),
    -- A copy of tenancy_private.binding_key.k, so the per-transaction check in enter()
    -- reads one row of one table (a join showed up as per-call executor cost).
    bkey       bytea NOT NULL CHECK (length(bkey) = 64),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The database's binding key: 64 random bytes generated here, never sent anywhere.
CREATE TABLE IF NOT EXISTS tenancy_private.binding_key (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    k          bytea NOT NULL CHECK (length(k) = 64)
);

CREATE OR REPLACE FUNCTION tenancy_private.hmac_pads(key bytea, OUT ipad bytea, OUT opad bytea)
LANGUAGE plpgsql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    k bytea := key;
BEGIN
    IF length(k) > 64 THEN
        k := sha256(k);
    END IF;
    k := k || decode(repeat('00', 64 - length(k)), 'hex');
    ipad := k;
    opad := k;
    FOR i IN 0..63 LOOP
        ipad := set_byte(ipad, i, get_byte(k, i) # 54);   -- 0x36
        opad := set_byte(opad, i, get_byte(k, i) # 92);   -- 0x5c
    END LOOP;
END
$fn$;

DROP FUNCTION IF EXISTS tenancy_private.hmac(bytea, bytea, text);


-- Installs (or replaces) a context key given as 64 hex digits. Owner only.
CREATE OR REPLACE FUNCTION tenancy.install_context_key(kid text, material_hex text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    p record;
BEGIN
    IF material_hex !~ '^[0-9a-f]{64}$' THEN
        RAISE EXCEPTION 'context key material must be 64 lowercase hex digits';
    END IF;
    SELECT * INTO p FROM tenancy_private.hmac_pads(decode(material_hex, 'hex'));
    -- The database's binding key, generated here on first use (also in a clone of a
    -- template stripped of its secrets): 64 random bytes that never leave the database.
    INSERT INTO tenancy_private.binding_key (k)
    SELECT sha256(uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()))
           || sha256(uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()))
    ON CONFLICT (singleton) DO NOTHING;
    INSERT INTO tenancy_private.context_keys (kid, ipad, opad, bkey)
    SELECT kid, p.ipad, p.opad, b.k FROM tenancy_private.binding_key b
    ON CONFLICT ON CONSTRAINT context_keys_pkey DO UPDATE
        SET ipad = EXCLUDED.ipad, opad = EXCLUDED.opad, bkey = EXCLUDED.bkey, created_at = now();
END
$fn$;
REVOKE ALL ON FUNCTION tenancy.install_context_key(text, text) FROM PUBLIC;

-- The binding is sha256(secret 64-byte key || message): one hash instead of HMAC's two.
-- Length extension cannot forge it: the verifier hashes exactly
-- textsend(<tenant>) || int4send(<pid>) || timestamptz_send(<transaction start>), all of
-- fixed length, and an extension of another tenant's message never has that form. The
-- token from the application keeps a real HMAC, since its text is parsed. The transaction
-- start goes in as its binary value (microseconds): its text would follow the session's
-- DateStyle, TimeZone or extra_float_digits, and a coarse text (`2e+09` at
-- extra_float_digits = -15) would keep one binding valid for years.
--
-- Single use: a token is accepted only if it was issued after the last token this backend
-- accepted. That issue time is kept in the session-level setting tenancy.last_issued as
-- `<issued µs>.<sha256(key || 'last_issued:<pid>:<issued µs>') hex>`. The runtime role can
-- write any tenancy.* setting, but cannot make a mark this backend never held: a value
-- whose hash does not verify (made up, or copied from another backend) counts as no
-- mark, like the empty value of a new backend. So no setting, not even a role default,
-- can raise the mark and lock the SDK out. What SQL on the backend can do is return to a
-- state the backend was in before: no mark (RESET, RESET ALL, any junk value) or an
-- earlier mark (rolling back the transaction that raised it). That re-admits only tokens
-- issued for this backend and still unexpired, and no SQL can read a token (they travel
-- as bound parameters), so it needs a token obtained outside the database.
--
-- Both context functions run on every transaction (enter) or every statement
-- (current_tenant_id). Each is one small query over one table inside plpgsql, which keeps
-- it prepared for the session; plan nodes, joins, subqueries, extra plpgsql expressions
-- and regular expressions all showed up in profiles as per-call cost. No regular
-- expressions are needed: the HMAC check rejects anything that was not signed.
--
-- force_generic_plan: with the token as a parameter the planner would otherwise fold the
-- whole check into constants and, finding that cheaper, re-plan the query on every call.
-- The PL/pgSQL implementation, installed unless the database already has the native one
-- (native.sql, created by the superuser bootstrap from the tenancy_context C library).
-- Setting tenancy.runtime_impl = 'plpgsql' in the installing session forces this one.
-- Native means all three C functions: a database left with an older native.sql (no
-- enter_read_only, which the SDK prepares on every native connection) gets PL/pgSQL
-- rather than connections that cannot open read-only transactions. Both implementations
-- have tenancy.enter_read_only, the opening of implicit read-only transactions.
DO $impl$
BEGIN
    IF coalesce(current_setting('tenancy.runtime_impl', true), '') <> 'plpgsql'
       AND (SELECT count(*) FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_language l ON l.oid = p.prolang
             WHERE p.oid IN (to_regprocedure('tenancy.enter(text)'), to_regprocedure('tenancy.current_tenant_id()'),
                             to_regprocedure('tenancy.enter_read_only(text)'))
               AND l.lanname = 'c') = 3 THEN
        RETURN;
    END IF;
    -- The native context as the tenancy_context extension: its functions leave it (the
    -- PL/pgSQL ones below replace them in place, keeping the policies that call them),
    -- and the emptied extension goes. Needs the role that created it (the bootstrap
    -- creates it as the owner role).
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'tenancy_context') THEN
        DECLARE
            member regprocedure;
        BEGIN
            FOR member IN SELECT d.objid::regprocedure FROM pg_catalog.pg_depend d
                            JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid
                           WHERE e.extname = 'tenancy_context' AND d.deptype = 'e'
                             AND d.classid = 'pg_catalog.pg_proc'::regclass LOOP
                EXECUTE format('ALTER EXTENSION tenancy_context DROP FUNCTION %s', member);
            END LOOP;
        END;
        DROP EXTENSION tenancy_context;
    END IF;
    EXECUTE $def$
CREATE OR REPLACE FUNCTION tenancy.enter(token text) RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan AS $fn$
DECLARE
    problem     text;
    tenant_text text;
    ctx         text;
    mark        text;
BEGIN
    SELECT CASE
             WHEN length(token) > 200 OR split_part(token, '.', 1) NOT IN ('v1', 'v2')
                  OR length(split_part(token, '.', 7)) <> 64 OR split_part(token, '.', 8) <> ''
               THEN 'malformed tenant context token'
             WHEN coalesce(current_setting('tenancy.ctx', true), '') <> '' AND tenancy.current_tenant_id() IS NOT NULL
               THEN 'this transaction already has a tenant context'
             -- HMAC-SHA256 over everything before the last dot; digests of the hex MACs are
             -- compared so the comparison time says nothing about the expected MAC.
             WHEN sha256(convert_to(encode(sha256(c.opad || sha256(c.ipad
                      || convert_to(left(token, length(token) - 65), 'UTF8'))), 'hex'), 'UTF8'))
                  <> sha256(convert_to(split_part(token, '.', 7), 'UTF8'))
               THEN 'tenant context token signature does not verify'
             -- Signed fields only from here on; the signer writes them canonically.
             WHEN split_part(token, '.', 1) = 'v1' AND split_part(token, '.', 4) <> pg_backend_pid()::text
               THEN 'tenant context token was issued for another connection'
             -- A v2 token is bound to one transaction: this backend's pid and the
             -- transaction's start (the timestamptz_send bytes in hex), which the SDK read
             -- inside this transaction (behind a transaction-mode pooler). A later
             -- transaction on this backend starts later, and this one gets one context.
             WHEN split_part(token, '.', 1) = 'v2'
                  AND split_part(token, '.', 4) <> pg_backend_pid()::text || '-'
                      || encode(timestamptz_send(transaction_timestamp()), 'hex')
               THEN 'tenant context token was issued for another transaction'
             WHEN split_part(token, '.', 6)::bigint < (extract(epoch FROM clock_timestamp()) * 1000000)::bigint
               THEN 'tenant context token has expired'
             -- Single use: refused if issued no later than the mark, and the mark counts only
             -- if enter() wrote it on this backend (its hash verifies); anything else is no
             -- mark. Issue times are compared as canonical decimals (shorter is smaller, then
             -- byte order), so a made-up mark cannot fail a cast; the hash is computed only
             -- when the token would be refused, as an unverified mark admits the token anyway.
             WHEN split_part(token, '.', 1) = 'v1'
                  AND CASE WHEN length(split_part(token, '.', 5))
                            < length(split_part(current_setting('tenancy.last_issued', true), '.', 1))
                         OR (length(split_part(token, '.', 5))
                             = length(split_part(current_setting('tenancy.last_issued', true), '.', 1))
                             AND split_part(token, '.', 5) COLLATE "C"
                                 <= split_part(current_setting('tenancy.last_issued', true), '.', 1) COLLATE "C")
                       THEN encode(sha256(c.bkey || textsend('last_issued:' || pg_backend_pid()::text || ':'
                                || split_part(current_setting('tenancy.last_issued', true), '.', 1))), 'hex')
                            = split_part(current_setting('tenancy.last_issued', true), '.', 2)
                  END
               THEN 'tenant context token was already used on this connection'
           END AS problem,
           split_part(token, '.', 3) AS tenant_text,
           split_part(token, '.', 3) || '.' || encode(sha256(c.bkey || textsend(split_part(token, '.', 3))
               || int4send(pg_backend_pid()) || timestamptz_send(transaction_timestamp())), 'hex') AS ctx,
           split_part(token, '.', 5) || '.' || encode(sha256(c.bkey || textsend('last_issued:'
               || pg_backend_pid()::text || ':' || split_part(token, '.', 5))), 'hex') AS mark
      INTO problem, tenant_text, ctx, mark
      FROM tenancy_private.context_keys c
     WHERE c.kid = split_part(token, '.', 2);
    IF NOT FOUND THEN
        problem := CASE WHEN token IS NULL OR length(token) > 200 OR split_part(token, '.', 1) NOT IN ('v1', 'v2')
                        THEN 'malformed tenant context token'
                        ELSE 'tenant context token signed with an unknown key' END;
    END IF;
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = '28000', MESSAGE = 'tenancy: ' || problem;
    END IF;
    -- The context is transaction-local: gone at COMMIT or ROLLBACK, never carried to the
    -- connection's next user. The mark is session-level: it outlives the transaction
    -- (unless that rolls back) so the token cannot enter another one.
    IF split_part(token, '.', 1) = 'v1' THEN
        PERFORM set_config('tenancy.ctx', ctx, true), set_config('tenancy.last_issued', mark, false);
    ELSE
        -- A v2 token needs no mark: it names this transaction.
        PERFORM set_config('tenancy.ctx', ctx, true);
    END IF;
    RETURN tenant_text::uuid;
END
$fn$
$def$;
    EXECUTE $def$
CREATE OR REPLACE FUNCTION tenancy.current_tenant_id() RETURNS uuid
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    -- NULL unless tenancy.ctx holds a binding enter() made for this backend and this
    -- transaction: a raw id, a made-up value or a value copied from another transaction or
    -- connection all fail the comparison.
    RETURN (
        SELECT CASE WHEN length(current_setting('tenancy.ctx', true)) = 101
                     AND encode(sha256(b.k || textsend(left(current_setting('tenancy.ctx', true), 36))
                             || int4send(pg_backend_pid()) || timestamptz_send(transaction_timestamp())), 'hex')
                         = right(current_setting('tenancy.ctx', true), 64)
                    THEN left(current_setting('tenancy.ctx', true), 36)::uuid
               END
          FROM tenancy_private.binding_key b
    );
END
$fn$
$def$;
    -- The opening of the SDK's implicit read-only transactions (no BEGIN, no COMMIT: the
    -- context and the statement share one Sync): resets session settings, enters the
    -- context, and makes the transaction read-only. SECURITY INVOKER and without SET
    -- clauses, like tenancy.reset_session(): a SET clause would put back, when the function
    -- returns, a value RESET ALL undid. Everything it names is schema-qualified. The
    -- read-only mode is a transaction-local setting, so a subtransaction rolled back
    -- around this call would undo it; the SDK calls it first in an implicit transaction,
    -- where SAVEPOINT is refused, and the mode is a safety net for GET handlers, not part
    -- of the isolation (the context is what RLS checks).
    EXECUTE $def$
CREATE OR REPLACE FUNCTION tenancy.enter_read_only(token text) RETURNS uuid
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    mark    text := pg_catalog.current_setting('tenancy.last_issued', true);
    tenant  uuid;
BEGIN
    RESET ALL;
    IF pg_catalog.length(mark) OPERATOR(pg_catalog.>) 0 THEN
        PERFORM pg_catalog.set_config('tenancy.last_issued', mark, false);
    END IF;
    tenant := tenancy.enter(token);
    PERFORM pg_catalog.set_config('transaction_read_only', 'on', true);
    RETURN tenant;
END
$fn$
$def$;
END
$impl$;

COMMENT ON FUNCTION tenancy.enter(text) IS 'tenancy:context-enter';
COMMENT ON FUNCTION tenancy.enter_read_only(text) IS 'tenancy:context-enter';
COMMENT ON FUNCTION tenancy.current_tenant_id() IS 'tenancy:context-read';

-- Makes `tbl` a tenant table: tenant column NOT NULL defaulting to the current tenant,
-- keys and foreign keys that include it, RLS enabled and forced, one policy for all
-- commands with USING and WITH CHECK on the tenant predicate, an index leading with the
-- tenant column, and only SELECT/INSERT/UPDATE/DELETE for the runtime role.
-- Refuses (and changes nothing) when a primary key, unique constraint or foreign key
-- leaves the tenant column out: such a key would let one tenant's rows collide with or
-- reference another's, and unique/foreign-key checks ignore RLS (existence oracles).
CREATE OR REPLACE FUNCTION tenancy.make_tenant_table(tbl regclass, tenant_column name DEFAULT 'tenant_id')
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    att  record;
    con  record;
    col  int2;
    pol  text := 'tenancy_tenant_isolation';
BEGIN
    IF NOT pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = tbl), 'USAGE') THEN
        RAISE EXCEPTION 'tenancy.make_tenant_table: % must be owned by % (the migration owner role)', tbl, current_user;
    END IF;
    SELECT a.attnum, a.atttypid INTO att FROM pg_attribute a
     WHERE a.attrelid = tbl AND a.attname = tenant_column AND NOT a.attisdropped;
    IF NOT FOUND THEN
        EXECUTE format('ALTER TABLE %s ADD COLUMN %I uuid NOT NULL DEFAULT tenancy.current_tenant_id()', tbl, tenant_column);
        SELECT a.attnum, a.atttypid INTO att FROM pg_attribute a WHERE a.attrelid = tbl AND a.attname = tenant_column;
    ELSIF att.atttypid <> 'uuid'::regtype THEN
        RAISE EXCEPTION 'tenancy.make_tenant_table: %.% must be of type uuid, not %', tbl, tenant_column, att.atttypid::regtype;
    END IF;
    col := att.attnum;
    FOR con IN SELECT conname, contype FROM pg_constraint
                WHERE conrelid = tbl AND contype IN ('p', 'u', 'f') AND NOT (col = ANY (conkey)) LOOP
        RAISE EXCEPTION 'tenancy.make_tenant_table: % constraint % on % does not include %',
            CASE con.contype WHEN 'p' THEN 'primary key' WHEN 'u' THEN 'unique' ELSE 'foreign key' END,
            con.conname, tbl, tenant_column
            USING HINT = format('Make it composite, e.g. PRIMARY KEY (%1$I, id), UNIQUE (%1$I, email), '
                'FOREIGN KEY (%1$I, customer_id) REFERENCES customers (%1$I, id). Unique and foreign-key checks '
                'ignore row-level security, so a key without %1$I lets tenants collide with, probe or reference '
                'each other''s rows.', tenant_column);
    END LOOP;
    FOR con IN SELECT conname FROM pg_constraint
                WHERE confrelid = tbl AND contype = 'f' AND NOT (col = ANY (confkey)) LOOP
        RAISE EXCEPTION 'tenancy.make_tenant_table: foreign key % references % without %', con.conname, tbl, tenant_column
            USING HINT = 'Reference the composite key (tenant_id, id) instead.';
    END LOOP;
    EXECUTE format('ALTER TABLE %s ALTER COLUMN %I SET NOT NULL, ALTER COLUMN %I SET DEFAULT tenancy.current_tenant_id()',
        tbl, tenant_column, tenant_column);
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY', tbl);
    EXECUTE format('DROP POLICY IF EXISTS %I ON %s', pol, tbl);
    EXECUTE format('CREATE POLICY %I ON %s AS PERMISSIVE FOR ALL TO PUBLIC USING (%I = (SELECT tenancy.current_tenant_id())) '
        'WITH CHECK (%I = (SELECT tenancy.current_tenant_id()))', pol, tbl, tenant_column, tenant_column);
    IF NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = tbl AND i.indkey[0] = col) THEN
        EXECUTE format('CREATE INDEX ON %s (%I)', tbl, tenant_column);
    END IF;
    EXECUTE format('REVOKE ALL ON %s FROM PUBLIC', tbl);
    EXECUTE format('REVOKE ALL ON %s FROM tenancy_app', tbl);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO tenancy_app', tbl);
END
$fn$;
REVOKE ALL ON FUNCTION tenancy.make_tenant_table(regclass, name) FROM PUBLIC;

GRANT USAGE ON SCHEMA tenancy TO tenancy_app;
REVOKE ALL ON FUNCTION tenancy.enter(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION tenancy.current_tenant_id() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy.enter(text) TO tenancy_app;
REVOKE ALL ON FUNCTION tenancy.enter_read_only(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy.enter_read_only(text) TO tenancy_app;
GRANT EXECUTE ON FUNCTION tenancy.current_tenant_id() TO tenancy_app;
