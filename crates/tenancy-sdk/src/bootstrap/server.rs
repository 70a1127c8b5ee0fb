//! Setting up a server tenancy did not start (`tenancy bootstrap`): what the connecting
//! role may do, what exists, and the SQL that completes the rest.
//!
//! Works without superuser where PostgreSQL allows it. The minimum is a role with
//! CREATEROLE that owns the database (what a managed service grants its admin user):
//! it creates the tenancy roles (on PostgreSQL 16 it then administers them), makes itself
//! a member of the owner role (to create the owner's schemas and set its default
//! privileges), and sets up the database it owns. Without superuser the PL/pgSQL context
//! is installed (C functions need a superuser or the `tenancy_context` extension).
//!
//! The work runs in phases, each idempotent and the first two each in one transaction, so
//! a run that stopped anywhere leaves a state the next run completes:
//! 1. roles, passwords, the owner-role membership, objects an earlier run (as another
//!    role) left in tenancy's schemas handed to the owner role, database privileges and
//!    schemas (`sql/bootstrap.sql`, `sql/database.sql`);
//! 2. as the owner role: the runtime schema and the context key (`sql/runtime.sql`).
//!
//! The native context ([`bootstrap_database`]) is tried between the two when the server
//! can have it. The catalog's migrations are the caller's (they are the catalog's).

use std::fmt::Write as _;

use tenancy_core::ContextKey;
use tokio_postgres::Client;

use super::{
    quote_ident, BOOTSTRAP_SQL, CONFIG_READER_ROLE, DATABASE_SQL, OWNER_ROLE, RUNTIME_ROLE,
    RUNTIME_SQL, WORKER_ROLE,
};
use crate::Error;

/// The roles `tenancy bootstrap` creates, in order.
pub const ROLES: [&str; 4] = [OWNER_ROLE, RUNTIME_ROLE, WORKER_ROLE, CONFIG_READER_ROLE];

/// Schemas tenancy owns in a database; an earlier run as another role may have left
/// one owned by that role.
pub const SCHEMAS: [&str; 3] = ["tenancy", "tenancy_private", "tenancy_catalog"];

/// What the server and database look like to the connecting role.
#[derive(Debug, Clone)]
pub struct ServerState {
    /// The connecting role.
    pub user: String,
    /// The database.
    pub dbname: String,
    /// `server_version_num`.
    pub server_version: i32,
    /// The connecting role is a superuser.
    pub superuser: bool,
    /// The connecting role has CREATEROLE.
    pub createrole: bool,
    /// Owner of the database.
    pub db_owner: String,
    /// The connecting role has the privileges of the database's owner.
    pub owns_db: bool,
    /// Existing tenancy roles and whether their attributes need fixing (superuser,
    /// BYPASSRLS or REPLICATION, which only a superuser may change).
    pub roles: Vec<ExistingRole>,
    /// The connecting role has the owner role's privileges (member with INHERIT).
    pub member_of_owner: bool,
    /// The connecting role may grant the owner role (superuser, ADMIN OPTION, or
    /// CREATEROLE before PostgreSQL 16).
    pub can_grant_owner: bool,
    /// Owner of schema `public`, if it exists, and whether the connecting role has
    /// its privileges.
    pub public_owner: Option<(String, bool)>,
    /// Tenancy's schemas that exist and are owned by another role than the owner role
    /// (or hold objects that are), with whether the connecting role has that role's
    /// privileges (and so can hand them over).
    pub foreign_schemas: Vec<ForeignSchema>,
    /// The runtime schema is installed.
    pub runtime_installed: bool,
    /// Key ids of the installed context keys (readable when the connecting role has the
    /// owner role's privileges).
    pub context_keys: Vec<String>,
    /// The `tenancy_context` extension is available on the server to a role that is
    /// not a superuser (a trusted extension: the database owner may create it).
    pub native_available: bool,
}

/// A tenancy role that exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingRole {
    /// Name.
    pub name: String,
    /// It has SUPERUSER, BYPASSRLS or REPLICATION.
    pub privileged: bool,
}

/// A tenancy schema owned (or holding objects owned) by another role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignSchema {
    /// Schema name.
    pub schema: String,
    /// The roles owning the schema or objects in it (not the owner role).
    pub owners: Vec<String>,
    /// The connecting role has the privileges of all of them.
    pub can_take: bool,
}

impl ServerState {
    /// Whether role `name` exists.
    pub fn has_role(&self, name: &str) -> bool {
        self.roles.iter().any(|r| r.name == name)
    }

    /// Whether everything is in place: roles, schemas, runtime (the catalog aside).
    pub fn bootstrapped(&self) -> bool {
        ROLES.iter().all(|r| self.has_role(r))
            && self.runtime_installed
            && self.foreign_schemas.is_empty()
    }
}

/// Reads what [`plan`] needs. Changes nothing.
pub async fn inspect(client: &Client) -> Result<ServerState, Error> {
    let row = client
        .query_one(
            "SELECT current_user::text, current_database()::text,
                    current_setting('server_version_num')::int,
                    r.rolsuper, r.rolcreaterole, pg_get_userbyid(d.datdba)::text,
                    pg_has_role(current_user, d.datdba, 'USAGE'),
                    EXISTS (SELECT 1 FROM pg_catalog.pg_available_extension_versions
                             WHERE name = 'tenancy_context' AND (trusted OR NOT superuser)),
                    to_regprocedure('tenancy.current_tenant_id()') IS NOT NULL
                          AND to_regclass('tenancy_private.context_keys') IS NOT NULL
               FROM pg_catalog.pg_roles r, pg_catalog.pg_database d
              WHERE r.rolname = current_user AND d.datname = current_database()",
            &[],
        )
        .await
        .map_err(Error::db("reading the connecting role and database"))?;
    let mut s = ServerState {
        user: row.get(0),
        dbname: row.get(1),
        server_version: row.get(2),
        superuser: row.get(3),
        createrole: row.get(4),
        db_owner: row.get(5),
        owns_db: row.get(6),
        native_available: row.get(7),
        runtime_installed: row.get(8),
        roles: Vec::new(),
        member_of_owner: false,
        can_grant_owner: false,
        public_owner: None,
        foreign_schemas: Vec::new(),
        context_keys: Vec::new(),
    };
    let names: Vec<&str> = ROLES.to_vec();
    for r in client
        .query(
            "SELECT rolname::text, rolsuper OR rolbypassrls OR rolreplication
               FROM pg_catalog.pg_roles WHERE rolname = ANY($1)",
            &[&names],
        )
        .await
        .map_err(Error::db("reading the tenancy roles"))?
    {
        s.roles.push(ExistingRole {
            name: r.get(0),
            privileged: r.get(1),
        });
    }
    if s.has_role(OWNER_ROLE) {
        let admin_check = if s.server_version >= 160000 {
            "pg_has_role(current_user, $1, 'USAGE WITH ADMIN OPTION')"
        } else {
            "pg_has_role(current_user, $1, 'USAGE WITH ADMIN OPTION') OR r.rolcreaterole"
        };
        let row = client
            .query_one(
                &format!(
                    "SELECT pg_has_role(current_user, $1, 'USAGE'), r.rolsuper OR {admin_check}
                       FROM pg_catalog.pg_roles r WHERE r.rolname = current_user"
                ),
                &[&OWNER_ROLE],
            )
            .await
            .map_err(Error::db("reading the owner-role membership"))?;
        s.member_of_owner = row.get(0);
        s.can_grant_owner = row.get(1);
    } else {
        // Created by this run: the creator administers it (PostgreSQL 16) or may grant
        // it anyway (CREATEROLE before 16).
        s.can_grant_owner = s.superuser || s.createrole;
    }
    s.public_owner = client
        .query_opt(
            "SELECT pg_get_userbyid(nspowner)::text, pg_has_role(current_user, nspowner, 'USAGE')
               FROM pg_catalog.pg_namespace WHERE nspname = 'public'",
            &[],
        )
        .await
        .map_err(Error::db("reading the owner of schema public"))?
        .map(|r| (r.get(0), r.get(1)));
    for schema in SCHEMAS {
        let rows = client
            .query(
                "WITH n AS (SELECT oid, nspowner FROM pg_catalog.pg_namespace WHERE nspname = $1),
                 o AS (SELECT nspowner AS owner FROM n
                       UNION SELECT relowner FROM pg_catalog.pg_class, n WHERE relnamespace = n.oid
                       UNION SELECT proowner FROM pg_catalog.pg_proc, n WHERE pronamespace = n.oid
                       UNION SELECT typowner FROM pg_catalog.pg_type, n WHERE typnamespace = n.oid)
                 SELECT pg_get_userbyid(owner)::text, pg_has_role(current_user, owner, 'USAGE')
                   FROM o WHERE pg_get_userbyid(owner) <> $2 ORDER BY 1",
                &[&schema, &OWNER_ROLE],
            )
            .await
            .map_err(Error::db("reading the owners of tenancy's schemas"))?;
        if !rows.is_empty() {
            s.foreign_schemas.push(ForeignSchema {
                schema: schema.to_owned(),
                owners: rows.iter().map(|r| r.get(0)).collect(),
                can_take: rows.iter().all(|r| r.get::<_, bool>(1)),
            });
        }
    }
    if s.runtime_installed && (s.superuser || s.member_of_owner) {
        s.context_keys = client
            .query(
                "SELECT kid FROM tenancy_private.context_keys ORDER BY kid",
                &[],
            )
            .await
            .map_err(Error::db("reading the installed context keys"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
    }
    Ok(s)
}

/// Passwords of the login roles; `None` leaves an existing role's password as it is
/// (and creates a new role without one, unless the caller generates it).
#[derive(Debug, Clone, Default)]
pub struct RolePasswords {
    /// `tenancy_owner`.
    pub owner: Option<String>,
    /// `tenancy_app`.
    pub runtime: Option<String>,
    /// `tenancy_worker`.
    pub worker: Option<String>,
    /// `tenancy_config_reader`.
    pub config_reader: Option<String>,
}

impl RolePasswords {
    fn of(&self, role: &str) -> Option<&str> {
        match role {
            OWNER_ROLE => self.owner.as_deref(),
            RUNTIME_ROLE => self.runtime.as_deref(),
            WORKER_ROLE => self.worker.as_deref(),
            CONFIG_READER_ROLE => self.config_reader.as_deref(),
            _ => None,
        }
    }
}

/// One statement batch of a phase: the SQL to run and the SQL to show (secrets
/// redacted).
#[derive(Debug, Clone)]
pub struct Statement {
    /// Sent to the server.
    pub sql: String,
    /// Printed by `--dry-run` (passwords and key material replaced by `<redacted>`).
    pub shown: String,
}

impl Statement {
    fn plain(sql: impl Into<String>) -> Self {
        let sql = sql.into();
        Statement {
            shown: sql.clone(),
            sql,
        }
    }
}

/// What a bootstrap will do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Phase 1, one transaction, as the connecting role.
    pub setup: Vec<Statement>,
    /// Try the native context between the phases.
    pub try_native: bool,
    /// Phase 2, one transaction, as the owner role (`SET LOCAL ROLE` first unless the
    /// connecting role is the owner role).
    pub runtime: Vec<Statement>,
    /// The context key installed in phase 2 (`None`: the key with that id is already
    /// installed and is kept).
    pub key: Option<ContextKey>,
}

impl Plan {
    /// The SQL of both phases as `--dry-run` prints it.
    pub fn shown(&self) -> String {
        let mut out = String::from("BEGIN;\n");
        for s in &self.setup {
            let _ = writeln!(out, "{};", s.shown.trim_end().trim_end_matches(';'));
        }
        out.push_str("COMMIT;\n");
        if self.try_native {
            out.push_str(
                "-- the native signed context (tenancy_context), best effort: \
                 tenancy_sdk::bootstrap::bootstrap_database\n",
            );
        }
        out.push_str("BEGIN;\n");
        for s in &self.runtime {
            let _ = writeln!(out, "{};", s.shown.trim_end().trim_end_matches(';'));
        }
        out.push_str("COMMIT;\n");
        out
    }
}

/// The SQL that hands every object of `schema` and the schema itself to the owner
/// role. Run by a role with the privileges of their current owners.
pub fn take_schema_sql(schema: &str) -> String {
    let lit = schema.replace('\'', "''");
    format!(
        "DO $take$
DECLARE
r record;
BEGIN
-- The schema first: a new owner of an object must be allowed to create in its schema.
EXECUTE format('ALTER SCHEMA %I OWNER TO {OWNER_ROLE}', '{lit}');
FOR r IN SELECT c.oid::regclass AS obj, c.relkind FROM pg_catalog.pg_class c
          WHERE c.relnamespace = '{q}'::regnamespace AND c.relowner <> '{OWNER_ROLE}'::regrole
            AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
            AND NOT (c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('a', 'i'))) LOOP
    EXECUTE format('ALTER %s %s OWNER TO {OWNER_ROLE}', CASE r.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
        WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END, r.obj);
END LOOP;
FOR r IN SELECT p.oid::regprocedure AS obj, p.prokind FROM pg_catalog.pg_proc p
          WHERE p.pronamespace = '{q}'::regnamespace AND p.proowner <> '{OWNER_ROLE}'::regrole LOOP
    EXECUTE format('ALTER %s %s OWNER TO {OWNER_ROLE}', CASE r.prokind WHEN 'p' THEN 'PROCEDURE'
        WHEN 'a' THEN 'AGGREGATE' ELSE 'FUNCTION' END, r.obj);
END LOOP;
FOR r IN SELECT t.oid::regtype AS obj, t.typtype FROM pg_catalog.pg_type t
          WHERE t.typnamespace = '{q}'::regnamespace AND t.typowner <> '{OWNER_ROLE}'::regrole
            AND t.typtype IN ('c', 'd', 'e', 'r')
            AND (t.typrelid = 0 OR (SELECT relkind FROM pg_catalog.pg_class WHERE oid = t.typrelid) = 'c') LOOP
    EXECUTE format('ALTER %s %s OWNER TO {OWNER_ROLE}', CASE r.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, r.obj);
END LOOP;
END
$take$",
        q = quote_ident(schema).replace('\'', "''"),
    )
}

/// Decides what to run, or refuses with what is missing and how to fix it. `key`
/// replaces an installed key of the same id; `None` keeps an installed one (and
/// `generated_key` is installed when the database has none with that id).
pub fn plan(
    state: &ServerState,
    passwords: &RolePasswords,
    key: Option<ContextKey>,
    generated_key: ContextKey,
) -> Result<Plan, Error> {
    let refuse = |m: String| Err(Error::Invalid(m));
    let who = quote_ident(&state.user);
    let missing: Vec<&str> = ROLES
        .iter()
        .copied()
        .filter(|r| !state.has_role(r))
        .collect();
    if !missing.is_empty() && !state.superuser && !state.createrole {
        return refuse(format!(
            "role {} cannot create roles ({} missing): give it CREATEROLE (as an administrator: \
             ALTER ROLE {who} CREATEROLE) or run tenancy bootstrap as a role that has it",
            state.user,
            missing.join(", ")
        ));
    }
    if let Some(r) = state.roles.iter().find(|r| r.privileged) {
        if !state.superuser {
            return refuse(format!(
                "role {} exists with SUPERUSER, BYPASSRLS or REPLICATION, which tenancy's roles must not \
                 have and only a superuser may take away: as a superuser run ALTER ROLE {} NOSUPERUSER \
                 NOBYPASSRLS NOREPLICATION, then run tenancy bootstrap again",
                r.name,
                quote_ident(&r.name)
            ));
        }
    }
    if !state.superuser && !state.owns_db {
        return refuse(format!(
            "role {} does not own database {} (its owner is {}): as {} or a superuser run \
             ALTER DATABASE {} OWNER TO {who}, or run tenancy bootstrap as {}",
            state.user,
            state.dbname,
            state.db_owner,
            state.db_owner,
            quote_ident(&state.dbname),
            state.db_owner
        ));
    }
    if !state.superuser && !state.member_of_owner && !state.can_grant_owner {
        return refuse(format!(
            "role {} is not a member of {OWNER_ROLE} and may not grant it (it needs to act as the owner \
             role to create tenancy's schemas): as a superuser run GRANT {OWNER_ROLE} TO {who}{}, then \
             run tenancy bootstrap again",
            state.user,
            if state.server_version >= 160000 {
                " WITH INHERIT TRUE, SET TRUE"
            } else {
                ""
            }
        ));
    }
    if let Some((owner, ours)) = &state.public_owner {
        if owner != OWNER_ROLE && !ours && !state.superuser {
            return refuse(format!(
                "schema public is owned by {owner}, and {} cannot hand it to {OWNER_ROLE} (which creates \
                 the pooled tables there): as {owner} or a superuser run ALTER SCHEMA public OWNER TO \
                 {OWNER_ROLE}, then run tenancy bootstrap again",
                state.user
            ));
        }
    }
    if let Some(f) = state
        .foreign_schemas
        .iter()
        .find(|f| !f.can_take && !state.superuser)
    {
        let grants: Vec<String> = f
            .owners
            .iter()
            .map(|o| format!("GRANT {} TO {who}", quote_ident(o)))
            .collect();
        return refuse(format!(
            "schema {} holds objects of {} (left by an earlier run as that role), which {} may not hand \
             to {OWNER_ROLE}. Either let it: as a superuser run `{}`, then run tenancy bootstrap again \
             (it hands the schema and its objects to {OWNER_ROLE}); or, if the schema holds nothing you \
             need, as {} or a superuser run `DROP SCHEMA {} CASCADE`, then run tenancy bootstrap again",
            f.schema,
            f.owners.join(", "),
            state.user,
            grants.join("; "),
            f.owners.join(" / "),
            quote_ident(&f.schema)
        ));
    }

    let mut setup = vec![Statement::plain(BOOTSTRAP_SQL)];
    for role in ROLES {
        let Some(pw) = passwords.of(role) else {
            continue;
        };
        // The SCRAM verifier is computed here: the password itself never reaches the
        // server, its statement log or its statistics.
        let verifier = postgres_protocol::password::scram_sha_256(pw.as_bytes());
        setup.push(Statement {
            sql: format!("ALTER ROLE {} PASSWORD '{verifier}'", quote_ident(role)),
            shown: format!("ALTER ROLE {} PASSWORD '<redacted>'", quote_ident(role)),
        });
    }
    if !state.superuser && !state.member_of_owner {
        let with = if state.server_version >= 160000 {
            " WITH INHERIT TRUE, SET TRUE"
        } else {
            ""
        };
        setup.push(Statement::plain(format!(
            "GRANT {OWNER_ROLE} TO {who}{with}"
        )));
    }
    for f in &state.foreign_schemas {
        setup.push(Statement::plain(take_schema_sql(&f.schema)));
    }
    setup.push(Statement::plain(
        DATABASE_SQL.replace(":dbname", &quote_ident(&state.dbname)),
    ));

    let mut runtime = Vec::new();
    if state.user != OWNER_ROLE {
        runtime.push(Statement::plain(format!("SET LOCAL ROLE {OWNER_ROLE}")));
    }
    runtime.push(Statement::plain(RUNTIME_SQL));
    let key = match key {
        Some(k) => Some(k),
        None if state
            .context_keys
            .iter()
            .any(|k| k == generated_key.kid().as_str()) =>
        {
            None
        }
        None => Some(generated_key),
    };
    if let Some(k) = &key {
        runtime.push(Statement {
            sql: format!(
                "SELECT tenancy.install_context_key('{}', '{}')",
                k.kid().as_str(),
                k.material_hex()
            ),
            shown: format!(
                "SELECT tenancy.install_context_key('{}', '<redacted>')",
                k.kid().as_str()
            ),
        });
    }
    Ok(Plan {
        setup,
        try_native: state.superuser || state.native_available,
        runtime,
        key,
    })
}

/// Phase 1 of `plan`, in one transaction.
pub async fn apply_setup(client: &mut Client, plan: &Plan) -> Result<(), Error> {
    run_in_tx(
        client,
        &plan.setup,
        "setting up roles, privileges and schemas",
    )
    .await
}

/// The native context attempt and phase 2 of `plan`, in one transaction.
pub async fn apply_runtime(client: &mut Client, plan: &Plan) -> Result<(), Error> {
    if plan.try_native {
        let dbname: String = client
            .query_one("SELECT current_database()::text", &[])
            .await
            .map_err(Error::db("reading the database name"))?
            .get(0);
        super::bootstrap_database(client, &dbname).await?;
    }
    run_in_tx(
        client,
        &plan.runtime,
        "installing the runtime schema and the context key",
    )
    .await
}

async fn run_in_tx(
    client: &mut Client,
    statements: &[Statement],
    what: &'static str,
) -> Result<(), Error> {
    let tx = client.transaction().await.map_err(Error::db(what))?;
    for s in statements {
        tx.batch_execute(&s.sql).await.map_err(Error::db(what))?;
    }
    tx.commit().await.map_err(Error::db(what))
}

/// What is missing for tenancy in the database `client` is connected to, as a
/// sentence naming it (`None`: roles, schemas and runtime are in place). Read-only,
/// and works as any role (it reads only the system catalogs).
pub async fn missing(client: &Client) -> Result<Option<String>, Error> {
    let row = client
        .query_one(
            "SELECT ARRAY(SELECT r FROM unnest($1::text[]) r
                           WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r)),
                    to_regnamespace('tenancy') IS NOT NULL,
                    to_regprocedure('tenancy.current_tenant_id()') IS NOT NULL,
                    (SELECT pg_get_userbyid(nspowner)::text FROM pg_catalog.pg_namespace WHERE nspname = 'tenancy_catalog')",
            &[&ROLES.to_vec()],
        )
        .await
        .map_err(Error::db("checking whether the server was bootstrapped"))?;
    let roles: Vec<String> = row.get(0);
    let mut what = Vec::new();
    if !roles.is_empty() {
        what.push(format!("role(s) {}", roles.join(", ")));
    }
    if !row.get::<_, bool>(1) {
        what.push("schema tenancy".to_owned());
    } else if !row.get::<_, bool>(2) {
        what.push("the signed-context functions (tenancy.current_tenant_id)".to_owned());
    }
    if let Some(owner) = row.get::<_, Option<String>>(3) {
        if owner != OWNER_ROLE {
            what.push(format!(
                "schema tenancy_catalog is owned by {owner}, not {OWNER_ROLE}"
            ));
        }
    }
    Ok((!what.is_empty()).then(|| what.join("; ")))
}
