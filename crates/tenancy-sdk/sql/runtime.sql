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
-- On direct connections (no transaction-mode pooler) the PL/pgSQL implementation has a
-- faster session context instead (see tenancy.init_session and tenancy.enter_session
-- below): per-backend state in temporary sequences owned by tenancy_owner, set up once
-- with a token the SDK signed for the backend, entered with a secret the SDK handed over
-- in the previous opening (a bound parameter; each works once), read by
-- current_tenant_id() as an inlined SQL function whose sequences the planner resolves.
-- Tokens stay for transaction-mode poolers (v2) and the native implementation.
--
-- Nothing the two functions hash or compare depends on a setting of the session: the
-- hashed values are binary (int4send, timestamptz_send) or text the token or the
-- functions themselves wrote, and every name in them is schema-qualified (operators,
-- types and the collation included), so nothing resolves through the session's
-- search_path either.

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
-- The context functions run on every transaction (enter) or every statement
-- (enter_read_only on implicit read-only transactions, current_tenant_id). Each queries
-- one table inside plpgsql, which keeps the query prepared for the session, and those
-- queries have no parameter the planner could fold (a custom plan per call): the key
-- lookup compares the key id with an indexed column (custom and generic plans cost the
-- same, so the generic one is kept), and current_tenant_id reads its setting inside the
-- query. No regular expressions are needed: the HMAC check rejects anything that was not
-- signed.
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
    -- The native opening behind a transaction-mode pooler has no PL/pgSQL counterpart:
    -- it would enter the C context, which the PL/pgSQL functions do not read.
    DROP FUNCTION IF EXISTS tenancy.enter_pooled(pg_catalog.text, pg_catalog.bool, pg_catalog.int4,
        pg_catalog.int4, pg_catalog.int4, pg_catalog.int4, pg_catalog.text);
    -- Nor has the C insertion of an audit event: it checks the event's tenant against the
    -- C context, which no PL/pgSQL opening enters (it would refuse every event); without
    -- it tenancy-audit records events with an INSERT, checked by the policy.
    DROP FUNCTION IF EXISTS tenancy.audit_append(pg_catalog.uuid, pg_catalog.text, pg_catalog.text,
        pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.jsonb, pg_catalog.jsonb,
        pg_catalog.text, pg_catalog.text, pg_catalog.inet);
    -- The three functions below run on every transaction (enter) or every statement
    -- (enter_read_only on implicit read-only transactions, current_tenant_id). What they
    -- cost is mostly per function call: each call or operator in an expression is looked
    -- up, permission-checked and set up again in every transaction. So they split the token
    -- once (string_to_array), call few functions, and carry no SET clauses (each one
    -- saves and restores settings on every call). Without SET search_path, every name in
    -- them is schema-qualified, operators (OPERATOR(pg_catalog.=)), types, the collation
    -- and functions included, and none of them uses a construct that looks an operator up
    -- by name (IN, simple CASE, BETWEEN, IS DISTINCT FROM, NULLIF): nothing resolves
    -- through the caller's search_path, and pg_temp is never searched for functions or
    -- operators. enter and enter_read_only share one body; enter_read_only adds RESET ALL
    -- after the checks that read the session (as the native one resets once the token
    -- verified) and makes the transaction read-only at the end.
    DECLARE
        body text := $body$
DECLARE
    p      pg_catalog.text[] := pg_catalog.string_to_array(token, '.');
    mark   pg_catalog.text := pg_catalog.current_setting('tenancy.last_issued', true);
    k_ipad pg_catalog.bytea;
    k_opad pg_catalog.bytea;
    k_bkey pg_catalog.bytea;
    v1     pg_catalog.bool;
    done   pg_catalog.text;
BEGIN
    IF token IS NULL OR pg_catalog.length(token) OPERATOR(pg_catalog.>) 200
       OR pg_catalog.cardinality(p) OPERATOR(pg_catalog.<>) 7 OR pg_catalog.length(p[7]) OPERATOR(pg_catalog.<>) 64
       OR NOT (p[1] OPERATOR(pg_catalog.=) 'v1' OR p[1] OPERATOR(pg_catalog.=) 'v2') THEN
        RAISE EXCEPTION USING ERRCODE = '28000', MESSAGE = 'tenancy: malformed tenant context token';
    END IF;
    SELECT c.ipad, c.opad, c.bkey INTO k_ipad, k_opad, k_bkey
      FROM tenancy_private.context_keys c WHERE c.kid OPERATOR(pg_catalog.=) p[2];
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '28000', MESSAGE = 'tenancy: tenant context token signed with an unknown key';
    END IF;
    IF pg_catalog.current_setting('tenancy.ctx', true) OPERATOR(pg_catalog.<>) '' AND tenancy.context_from_setting() IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = '28000', MESSAGE = 'tenancy: this transaction already has a tenant context';
    END IF;
    -- HMAC-SHA256 over everything before the last dot; digests of the hex MACs are
    -- compared so the comparison time says nothing about the expected MAC.
    IF pg_catalog.sha256(pg_catalog.textsend(pg_catalog.encode(pg_catalog.sha256(k_opad OPERATOR(pg_catalog.||)
           pg_catalog.sha256(k_ipad OPERATOR(pg_catalog.||) pg_catalog.textsend(pg_catalog.left(token, -65)))), 'hex')))
       OPERATOR(pg_catalog.<>) pg_catalog.sha256(pg_catalog.textsend(p[7])) THEN
        RAISE EXCEPTION USING ERRCODE = '28000', MESSAGE = 'tenancy: tenant context token signature does not verify';
    END IF;
    -- Signed fields only from here on; the signer writes them canonically.
    v1 := p[1] OPERATOR(pg_catalog.=) 'v1';
    -- A backend with a session context (tenancy.init_session ran on it) takes no v1 token:
    -- the SDK enters it with its session secret, and the only v1 token it signs for it is
    -- the one init_session took (before the backend had a session context), so a v1
    -- token of it could only have been made to be replayed.
    -- (Inside IF v1: an expression with a subquery runs as a query of its own, set up and
    -- torn down on every call even where v1 is false.)
    IF v1 THEN
        IF EXISTS (SELECT 1 FROM tenancy_private.context_sessions s
                    WHERE s.pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid()) THEN
            RAISE EXCEPTION USING ERRCODE = '28000',
                MESSAGE = 'tenancy: tenant context token refused: this connection enters tenants with its session context';
        END IF;
        IF p[4] OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()::pg_catalog.text THEN
            RAISE EXCEPTION USING ERRCODE = '28000', MESSAGE = 'tenancy: tenant context token was issued for another connection';
        END IF;
    -- A v2 token is bound to one transaction: this backend's pid and the transaction's
    -- start (the timestamptz_send bytes in hex), which the SDK read inside this
    -- transaction (behind a transaction-mode pooler). A later transaction on this backend
    -- starts later, and this one gets one context.
    ELSIF p[4] OPERATOR(pg_catalog.<>) (pg_catalog.pg_backend_pid()::pg_catalog.text OPERATOR(pg_catalog.||) '-'
             OPERATOR(pg_catalog.||) pg_catalog.encode(pg_catalog.timestamptz_send(pg_catalog.transaction_timestamp()), 'hex')) THEN
        RAISE EXCEPTION USING ERRCODE = '28000', MESSAGE = 'tenancy: tenant context token was issued for another transaction';
    END IF;
    -- Expiry in µs since the Unix epoch, compared as float8 (exact to well under a µs).
    -- (OPERATOR() forms all have one precedence, left to right: hence the parentheses.)
    IF p[6]::pg_catalog.float8 OPERATOR(pg_catalog.<)
       (pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()) OPERATOR(pg_catalog.*) 1000000) THEN
        RAISE EXCEPTION USING ERRCODE = '28000', MESSAGE = 'tenancy: tenant context token has expired';
    END IF;
    -- Single use: refused if issued no later than the mark, and the mark counts only if
    -- enter() wrote it on this backend (its hash verifies); anything else is no mark.
    -- Issue times are compared as canonical decimals padded to 20 digits, so a made-up
    -- mark cannot fail a cast; the hash is computed only when the token would be refused,
    -- as an unverified mark admits the token anyway.
    IF v1 AND pg_catalog.lpad(p[5], 20, '0') OPERATOR(pg_catalog.<=)
              pg_catalog.lpad(pg_catalog.split_part(mark, '.', 1), 20, '0') COLLATE pg_catalog."C" THEN
        IF pg_catalog.encode(pg_catalog.sha256(k_bkey OPERATOR(pg_catalog.||) pg_catalog.textsend('last_issued:'
               OPERATOR(pg_catalog.||) pg_catalog.pg_backend_pid()::pg_catalog.text OPERATOR(pg_catalog.||) ':'
               OPERATOR(pg_catalog.||) pg_catalog.split_part(mark, '.', 1))), 'hex')
           OPERATOR(pg_catalog.=) pg_catalog.split_part(mark, '.', 2) THEN
            RAISE EXCEPTION USING ERRCODE = '28000', MESSAGE = 'tenancy: tenant context token was already used on this connection';
        END IF;
    END IF;
    /*reset*/
    -- (Settings are written by assignment, not PERFORM: an assignment of a simple
    -- expression skips the executor start-up a PERFORM query costs.)
    -- The context is transaction-local: gone at COMMIT or ROLLBACK, never carried to the
    -- connection's next user. The mark is session-level: it outlives the transaction
    -- (unless that rolls back) so the token cannot enter another one. A v2 token needs no
    -- mark: it names this transaction.
    done := pg_catalog.set_config('tenancy.ctx', p[3] OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||)
        pg_catalog.encode(pg_catalog.sha256(k_bkey OPERATOR(pg_catalog.||) pg_catalog.textsend(p[3])
            OPERATOR(pg_catalog.||) pg_catalog.int4send(pg_catalog.pg_backend_pid())
            OPERATOR(pg_catalog.||) pg_catalog.timestamptz_send(pg_catalog.transaction_timestamp())), 'hex'), true);
    IF v1 THEN
        done := pg_catalog.set_config('tenancy.last_issued', p[5] OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||)
            pg_catalog.encode(pg_catalog.sha256(k_bkey OPERATOR(pg_catalog.||) pg_catalog.textsend('last_issued:'
                OPERATOR(pg_catalog.||) pg_catalog.pg_backend_pid()::pg_catalog.text OPERATOR(pg_catalog.||) ':'
                OPERATOR(pg_catalog.||) p[5])), 'hex'), false);
    /*keep mark*/
    END IF;
    /*read only*/
    RETURN p[3]::pg_catalog.uuid;
END
$body$;
    BEGIN
        EXECUTE 'CREATE OR REPLACE FUNCTION tenancy.enter(token text) RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER AS ' || quote_literal(body);
        -- The opening of the SDK's implicit read-only transactions (no BEGIN, no COMMIT:
        -- the context and the statement share one Sync): enter, resetting session settings
        -- like tenancy.reset_session() (RESET ALL, keeping the single-use mark), and the
        -- transaction read-only. The read-only mode is a transaction-local setting, so a
        -- subtransaction rolled back around this call would undo it; the SDK calls it first
        -- in an implicit transaction, where SAVEPOINT is refused, and the mode is a safety
        -- net for GET handlers, not part of the isolation (the context is what RLS checks).
        EXECUTE 'CREATE OR REPLACE FUNCTION tenancy.enter_read_only(token text) RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER AS ' || quote_literal(
            replace(replace(replace(body,
                '/*reset*/', 'RESET ALL;'),
                '/*keep mark*/', 'ELSIF mark OPERATOR(pg_catalog.<>) '''' THEN
        done := pg_catalog.set_config(''tenancy.last_issued'', mark, false);'),
                '/*read only*/', 'done := pg_catalog.set_config(''transaction_read_only'', ''on'', true);'));
    END;
    -- The context a v1 or v2 token entered (tenancy.enter): NULL unless tenancy.ctx holds
    -- a binding enter() made for this backend and this transaction. A raw id, a made-up
    -- value or a value copied from another transaction or connection all fail the
    -- comparison. SECURITY DEFINER to read the binding key. current_tenant_id() calls it
    -- only when the transaction has no session context (behind a transaction-mode pooler).
    EXECUTE $def$
CREATE OR REPLACE FUNCTION tenancy.context_from_setting() RETURNS uuid
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED SECURITY DEFINER AS $fn$
DECLARE
    ctx pg_catalog.text := pg_catalog.current_setting('tenancy.ctx', true);
    k   pg_catalog.bytea;
BEGIN
    -- No context (no setting, or not the length of one): NULL without reading the key.
    IF pg_catalog.length(ctx) OPERATOR(pg_catalog.<>) 101 IS NOT FALSE THEN
        RETURN NULL;
    END IF;
    -- The key through a query without parameters (planned once per session), the check
    -- as a plain expression (set up once per transaction, not on every call).
    SELECT b.k INTO k FROM tenancy_private.binding_key b;
    IF pg_catalog.encode(pg_catalog.sha256(k OPERATOR(pg_catalog.||) pg_catalog.textsend(pg_catalog.left(ctx, 36))
           OPERATOR(pg_catalog.||) pg_catalog.int4send(pg_catalog.pg_backend_pid())
           OPERATOR(pg_catalog.||) pg_catalog.timestamptz_send(pg_catalog.transaction_timestamp())), 'hex')
       OPERATOR(pg_catalog.=) pg_catalog.right(ctx, 64) THEN
        RETURN pg_catalog.left(ctx, 36)::pg_catalog.uuid;
    END IF;
    RETURN NULL;
END
$fn$
$def$;
    -- The session context (direct connections, no pooler in between). Its state lives in
    -- four temporary sequences the owner role creates once per backend
    -- (tenancy.init_session): the tenant as two int8 (tenancy_ctx_hi, tenancy_ctx_lo), a
    -- hash of the start of the transaction that entered it (tenancy_ctx_tx) and the
    -- session secret (tenancy_ctx_secret). setval on a temporary sequence needs no
    -- transaction id, works in read-only transactions and is not undone by ROLLBACK: the
    -- context belongs to the transaction whose start hash is stored with it, and any other
    -- transaction on the backend reads NULL. The runtime role may SELECT hi, lo and tx
    -- (which currval needs) and nothing else: no setval, no nextval, nothing at all on the
    -- secret.
    --
    -- The transaction start is hashed from its float8 epoch (date_part of a timestamptz
    -- is binary: no DateStyle, TimeZone, IntervalStyle or extra_float_digits reaches it).
    --
    -- tenancy.session_seq(name) -> this backend's temporary sequence `name`, or NULL where
    -- the backend has none (no init_session, or DISCARD TEMP dropped them). IMMUTABLE, so
    -- the planner evaluates it once, when it plans a statement, and puts the sequence's
    -- oid in the plan as a constant: a statement prepared once per connection looks no
    -- name up when it runs, and its plan depends on the sequence, so dropping the
    -- sequence (DISCARD TEMP) replans it. (A plan made before init_session keeps NULL: no
    -- context, never a wrong one.) Only pg_temp is searched, which the runtime role
    -- cannot create objects in.
    EXECUTE $def$
CREATE OR REPLACE FUNCTION tenancy.session_seq(name pg_catalog.text) RETURNS pg_catalog.regclass
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL RESTRICTED SECURITY INVOKER AS $fn$
BEGIN
    RETURN pg_catalog.to_regclass('pg_temp.' OPERATOR(pg_catalog.||) name);
END
$fn$
$def$;
    --
    -- tenancy.init_session(token) -> the first secret. Once per backend, ever: it records
    -- the backend's pid in tenancy_private.context_sessions (owner only) and refuses a pid
    -- that is recorded and still running. Rows of backends that ended are removed first.
    -- So a DISCARD TEMP or DISCARD ALL (which drop the sequences) leaves a backend that can
    -- never enter a session context again: the SDK retires it. `token` is a v1 context
    -- token the SDK signed for this backend (for a tenant of its choosing; nothing is read
    -- under it): SQL injected into a transaction on a backend the SDK did not initialise
    -- (behind a transaction-mode pooler, whose backends never get a session context)
    -- cannot give itself a session context and a secret, because it cannot sign a token.
    -- It also refuses a database where the connecting role may create temporary objects:
    -- DISCARD TEMP and sequences of its own with these names would forge a context.
    EXECUTE $def$
CREATE TABLE IF NOT EXISTS tenancy_private.context_sessions (
    pid        int4 PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now()
)
$def$;
    EXECUTE $def$
DROP FUNCTION IF EXISTS tenancy.init_session();
DROP FUNCTION IF EXISTS tenancy.enter_session(int8, int8, int8);
DROP FUNCTION IF EXISTS tenancy.enter_session_read_only(int8, int8, int8)
$def$;
    EXECUTE $def$
CREATE OR REPLACE FUNCTION tenancy.init_session(token text) RETURNS int8
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    n int8;
BEGIN
    IF has_database_privilege(session_user, current_database(), 'TEMPORARY') THEN
        RAISE EXCEPTION USING ERRCODE = '42501',
            MESSAGE = format('tenancy: role %I may create temporary objects in database %I, which would let it forge '
                             'a session context', session_user, current_database()),
            HINT = format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC, %I (tenancy bootstrap does this)',
                          current_database(), session_user);
    END IF;
    DELETE FROM tenancy_private.context_sessions c
     WHERE NOT EXISTS (SELECT 1 FROM pg_stat_get_activity(NULL) a WHERE a.pid = c.pid);
    IF EXISTS (SELECT 1 FROM tenancy_private.context_sessions c WHERE c.pid = pg_backend_pid()) THEN
        RAISE EXCEPTION USING ERRCODE = '55000',
            MESSAGE = 'tenancy: this connection already initialised its session context (a second init_session is refused)';
    END IF;
    -- The token proves the SDK asks: its MAC, this backend, its expiry, single use.
    IF token IS NULL OR pg_catalog.split_part(token, '.', 1) <> 'v1' THEN
        RAISE EXCEPTION USING ERRCODE = '28000',
            MESSAGE = 'tenancy: init_session takes a v1 context token signed for this connection';
    END IF;
    PERFORM tenancy.enter(token);
    INSERT INTO tenancy_private.context_sessions (pid) VALUES (pg_backend_pid());
    -- CREATE without IF NOT EXISTS: an object of the same name (made before, by anyone) is an error.
    CREATE TEMP SEQUENCE tenancy_ctx_secret AS int8 MINVALUE -9223372036854775808;
    CREATE TEMP SEQUENCE tenancy_ctx_hi AS int8 MINVALUE -9223372036854775808;
    CREATE TEMP SEQUENCE tenancy_ctx_lo AS int8 MINVALUE -9223372036854775808;
    CREATE TEMP SEQUENCE tenancy_ctx_tx AS int8 MINVALUE -9223372036854775808;
    EXECUTE format('GRANT SELECT ON pg_temp.tenancy_ctx_hi, pg_temp.tenancy_ctx_lo, pg_temp.tenancy_ctx_tx TO %I',
                   session_user);
    -- Defined from the start, so currval in current_tenant_id() reads no context rather
    -- than failing before the first enter (0 is no transaction's hash in practice).
    n := setval('pg_temp.tenancy_ctx_hi', 0);
    n := setval('pg_temp.tenancy_ctx_lo', 0);
    n := setval('pg_temp.tenancy_ctx_tx', 0);
    RETURN setval('pg_temp.tenancy_ctx_secret', uuid_hash_extended(gen_random_uuid(), 0));
END
$fn$
$def$;
    -- tenancy.enter_session(hi, lo, secret, next) -> next. The secret is a bound
    -- parameter, read with pg_sequence_last_value (from the sequence itself: DISCARD
    -- SEQUENCES, which forgets currval, changes nothing). A wrong one is refused and
    -- burns the current one (a new random value nobody knows): the connection cannot
    -- enter again and the SDK retires it. A right one is replaced by `next`, which the SDK
    -- drew from its own CSPRNG and sends as a bound parameter like the secret (the server
    -- draws nothing per transaction): each secret works once. Then RESET ALL (session
    -- settings of an earlier transaction on this connection end here) and the state.
    -- STRICT: a NULL argument changes nothing (and enters nothing). Same shape as enter:
    -- no SET clauses, every name schema-qualified.
    --
    -- What it costs is mostly per expression and per function call in it (each is set up
    -- again in every transaction), so the whole state is written by one expression:
    -- setval's arguments are evaluated in order before it runs, and its third
    -- (is_called, true) is the AND of the other setvals, which return their non-null
    -- value; the secret's sequence is written last.
    DECLARE
        body text := $body$
DECLARE
    done pg_catalog.bool;
BEGIN
    IF (pg_catalog.pg_sequence_last_value(tenancy.session_seq('tenancy_ctx_secret')) OPERATOR(pg_catalog.=) secret)
       IS NOT TRUE THEN
        IF pg_catalog.pg_sequence_last_value(tenancy.session_seq('tenancy_ctx_secret')) IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = '55000',
                MESSAGE = 'tenancy: this connection has no session context (DISCARD TEMP or DISCARD ALL dropped it); it cannot enter a tenant again';
        END IF;
        done := pg_catalog.setval('pg_temp.tenancy_ctx_secret'::pg_catalog.regclass,
                                  pg_catalog.uuid_hash_extended(pg_catalog.gen_random_uuid(), 0)) IS NOT NULL;
        RAISE EXCEPTION USING ERRCODE = '28000', MESSAGE = 'tenancy: wrong session secret (the connection cannot enter a tenant again)';
    END IF;
    RESET ALL;
    RETURN pg_catalog.setval('pg_temp.tenancy_ctx_secret'::pg_catalog.regclass, next,
        pg_catalog.setval('pg_temp.tenancy_ctx_hi'::pg_catalog.regclass, hi) IS NOT NULL
        AND pg_catalog.setval('pg_temp.tenancy_ctx_lo'::pg_catalog.regclass, lo) IS NOT NULL
        AND pg_catalog.setval('pg_temp.tenancy_ctx_tx'::pg_catalog.regclass,
                pg_catalog.hashfloat8extended(pg_catalog.date_part('epoch', pg_catalog.transaction_timestamp()), 0))
            IS NOT NULL
        /*read only*/);
END
$body$;
    BEGIN
        EXECUTE 'CREATE OR REPLACE FUNCTION tenancy.enter_session(hi int8, lo int8, secret int8, next int8) RETURNS int8
LANGUAGE plpgsql VOLATILE STRICT SECURITY DEFINER AS ' || quote_literal(replace(body, '/*read only*/', ''));
        -- The opening of implicit read-only transactions: the same, and the transaction
        -- read-only (see enter_read_only), in the same expression.
        EXECUTE 'CREATE OR REPLACE FUNCTION tenancy.enter_session_read_only(hi int8, lo int8, secret int8, next int8) RETURNS int8
LANGUAGE plpgsql VOLATILE STRICT SECURITY DEFINER AS ' || quote_literal(replace(body, '/*read only*/',
            'AND pg_catalog.set_config(''transaction_read_only'', ''on'', true) IS NOT NULL'));
    END;
    -- The tenant of this transaction. SQL functions with a standard body (RETURN): the
    -- body is parsed once, when it is created, with every name bound then (no caller's
    -- search_path reaches it), and planning inlines the stored tree without parsing text.
    -- No plpgsql call, no SECURITY DEFINER: they run as the caller, who may read hi, lo
    -- and tx. The planner folds tenancy.session_seq (IMMUTABLE) to a constant and
    -- simplifies the CASE with it, so a plan holds one of two expressions:
    --   * on a backend with a session context: tenancy.session_tenant(), inlined: the
    --     sequences' tenant when the stored hash is this transaction's, else NULL (three
    --     currval of constant oids, no lookup);
    --   * on any other backend (behind a transaction-mode pooler, where every statement is
    --     planned anew): tenancy.context_from_setting(), the token-entered context;
    --     session_tenant() is dropped before it is inlined, so planning there reads one
    --     short body and makes one session_seq call.
    -- A backend with a session context never reads a token context: enter refuses v1
    -- tokens there, and the SDK signs v2 tokens only for pooled backends.
    -- VOLATILE because currval is (a STABLE function with a volatile body is not inlined);
    -- policies call current_tenant_id as (SELECT tenancy.current_tenant_id()): once per
    -- statement.
    EXECUTE $def$
CREATE OR REPLACE FUNCTION tenancy.session_tenant() RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL RESTRICTED SECURITY INVOKER
RETURN CASE
    WHEN pg_catalog.currval(tenancy.session_seq('tenancy_ctx_tx')) OPERATOR(pg_catalog.=)
         pg_catalog.hashfloat8extended(pg_catalog.date_part('epoch', pg_catalog.transaction_timestamp()), 0)
    THEN pg_catalog.encode(pg_catalog.int8send(pg_catalog.currval(tenancy.session_seq('tenancy_ctx_hi')))
         OPERATOR(pg_catalog.||) pg_catalog.int8send(pg_catalog.currval(tenancy.session_seq('tenancy_ctx_lo'))),
         'hex')::pg_catalog.uuid
END
$def$;
    EXECUTE $def$
CREATE OR REPLACE FUNCTION tenancy.current_tenant_id() RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL RESTRICTED SECURITY INVOKER
RETURN CASE WHEN tenancy.session_seq('tenancy_ctx_tx') IS NULL THEN tenancy.context_from_setting()
            ELSE tenancy.session_tenant() END
$def$;
    EXECUTE $def$
COMMENT ON FUNCTION tenancy.context_from_setting() IS 'tenancy:context-read';
COMMENT ON FUNCTION tenancy.session_tenant() IS 'tenancy:context-read';
COMMENT ON FUNCTION tenancy.init_session(text) IS 'tenancy:context-enter';
COMMENT ON FUNCTION tenancy.enter_session(int8, int8, int8, int8) IS 'tenancy:context-enter';
COMMENT ON FUNCTION tenancy.enter_session_read_only(int8, int8, int8, int8) IS 'tenancy:context-enter';
REVOKE ALL ON TABLE tenancy_private.context_sessions FROM PUBLIC;
REVOKE ALL ON FUNCTION tenancy.context_from_setting(), tenancy.init_session(text), tenancy.enter_session(int8, int8, int8, int8),
    tenancy.enter_session_read_only(int8, int8, int8, int8), tenancy.session_seq(text), tenancy.session_tenant() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy.context_from_setting(), tenancy.init_session(text), tenancy.enter_session(int8, int8, int8, int8),
    tenancy.enter_session_read_only(int8, int8, int8, int8), tenancy.session_seq(text), tenancy.session_tenant() TO tenancy_app
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
