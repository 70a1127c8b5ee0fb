-- Every API key a tenant's application issues or revokes (0012's functions) is an event
-- of the control log, in the chain of the key's tenant, recorded by the function in the
-- transaction of the change: the event exists exactly when the change committed. The
-- runtime role calls the versions below, which take who acted and the request, make the
-- change through 0012's functions and record it; it may no longer call 0012's directly,
-- so no key is issued or revoked without its event. It still reaches no part of the
-- control log itself: only these functions (SECURITY DEFINER) write it, and only the
-- event of the change they make, for the context's tenant.
-- - who: the caller, `user` or `api_key` (an application speaks for its tenant's users
--   and keys, never for an administrator, a worker or the system), its subject and, for
--   an API key, its key id; where: the request id;
-- - what: `api_key.issue` or `api_key.revoke` on `api_key:<key id>`, the key's name and
--   scopes after (a revocation: its revocation time before and after, as the control
--   plane's own revocation records). Never the key or its hash.
-- A revocation of a key already revoked changes nothing and records nothing.
-- Runs as the owner role.

REVOKE EXECUTE ON FUNCTION tenancy_catalog.issue_tenant_api_key(text, bytea, text, text[], text[]),
    tenancy_catalog.revoke_tenant_api_key(text) FROM tenancy_app;

-- Refuses an actor the runtime role may not record.
CREATE FUNCTION tenancy_catalog.tenant_key_actor(p_function text, p_actor_kind text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF p_actor_kind IS NULL OR p_actor_kind NOT IN ('user', 'api_key') THEN
        RAISE EXCEPTION '%: the actor must be a user or an API key of the tenant, not %', p_function,
            coalesce(quote_literal(p_actor_kind), 'none')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$fn$;

CREATE FUNCTION tenancy_catalog.issue_tenant_api_key(p_key_id text, p_secret_hash bytea, p_name text,
                                                     p_scopes text[], p_permissions text[],
                                                     p_actor_kind text, p_actor_subject text,
                                                     p_actor_key_id text, p_request_id text)
RETURNS TABLE (key_id text, name text, scopes text[], created_at timestamptz)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    PERFORM tenancy_catalog.tenant_key_actor('tenancy_catalog.issue_tenant_api_key', p_actor_kind);
    SELECT i.key_id, i.name, i.scopes, i.created_at INTO key_id, name, scopes, created_at
      FROM tenancy_catalog.issue_tenant_api_key(p_key_id, p_secret_hash, p_name, p_scopes, p_permissions) i;
    INSERT INTO tenancy_catalog.audit_log (tenant_id, actor_kind, actor_subject, actor_key_id, action,
                                           target, after, request_id, outcome)
    VALUES (tenancy.current_tenant_id(), p_actor_kind, p_actor_subject, p_actor_key_id, 'api_key.issue',
            'api_key:' || p_key_id, jsonb_build_object('name', p_name, 'scopes', to_jsonb(p_scopes)),
            p_request_id, 'success');
    RETURN NEXT;
END
$fn$;

CREATE FUNCTION tenancy_catalog.revoke_tenant_api_key(p_key_id text, p_actor_kind text,
                                                      p_actor_subject text, p_actor_key_id text,
                                                      p_request_id text)
RETURNS SETOF tenancy_catalog.tenant_api_key
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v_tenant uuid := tenancy.current_tenant_id();
    -- The key's revocation time before this call (locked): an event only for a change.
    v_was timestamptz;
    v_key tenancy_catalog.tenant_api_key;
BEGIN
    PERFORM tenancy_catalog.tenant_key_actor('tenancy_catalog.revoke_tenant_api_key', p_actor_kind);
    SELECT k.revoked_at INTO v_was FROM tenancy_catalog.api_keys k
     WHERE k.key_id = p_key_id AND k.tenant_id = v_tenant FOR UPDATE;
    SELECT * INTO v_key FROM tenancy_catalog.revoke_tenant_api_key(p_key_id);
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF v_was IS NULL THEN
        INSERT INTO tenancy_catalog.audit_log (tenant_id, actor_kind, actor_subject, actor_key_id, action,
                                               target, before, after, request_id, outcome)
        VALUES (v_tenant, p_actor_kind, p_actor_subject, p_actor_key_id, 'api_key.revoke',
                'api_key:' || p_key_id, jsonb_build_object('revoked_at', NULL),
                jsonb_build_object('name', v_key.name, 'scopes', to_jsonb(v_key.scopes),
                                   'revoked_at', v_key.revoked_at),
                p_request_id, 'success');
    END IF;
    RETURN NEXT v_key;
END
$fn$;

REVOKE ALL ON FUNCTION tenancy_catalog.tenant_key_actor(text, text),
    tenancy_catalog.issue_tenant_api_key(text, bytea, text, text[], text[], text, text, text, text),
    tenancy_catalog.revoke_tenant_api_key(text, text, text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    tenancy_catalog.issue_tenant_api_key(text, bytea, text, text[], text[], text, text, text, text),
    tenancy_catalog.revoke_tenant_api_key(text, text, text, text, text) TO tenancy_app;
