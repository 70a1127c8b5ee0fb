//! The warm pool's spares: schemas and databases made ahead of demand at the app's latest
//! version, with no tenant, renamed to a tenant's when claimed.

use sha2::{Digest, Sha256};
use tenancy_core::ContextKey;
use tenancy_sdk::bootstrap::quote_ident;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use super::{create_schema_fast, drop_database, MARKER};
use crate::{AppMigrations, Error};

/// Prefix of a spare schema of the warm pool: created exactly like a tenant schema at the
/// app's latest version, with no tenant, and renamed to a tenant's schema when claimed.
pub const SPARE_SCHEMA_PREFIX: &str = "tenancy_spare_";

/// Prefix of a spare database of the warm pool: a finalised clone of the template (own
/// binding and context keys), with no tenant, renamed to a tenant's database when claimed.
pub const SPARE_DATABASE_PREFIX: &str = "tenancy_spare_db_";

/// Comment prefix on a complete spare database, followed by its tag
/// ([`spare_database_tag`]). Only a spare carrying the current tag is claimed.
pub const SPARE_DATABASE_MARKER: &str = "tenancy-spare-of:";

/// What a complete spare database is: a clone of `template` finalised with context key
/// `key` (its id and a 64-bit fingerprint of its material, so a control plane never claims
/// a spare another one, with another key, made on a shared cluster).
pub fn spare_database_tag(template: &str, key: &ContextKey) -> String {
    let mut h = Sha256::new();
    h.update(b"tenancy-spare-key:");
    h.update(key.material_hex().as_bytes());
    let fp = format!("{:x}", h.finalize());
    format!("{template};key:{}:{}", key.kid().as_str(), &fp[..16])
}

/// The key part of a spare database's tag (see [`spare_database_tag`]).
pub fn spare_database_key_part(tag: &str) -> Option<&str> {
    tag.rsplit_once(";key:").map(|(_, k)| k)
}

/// A fresh name for a spare schema.
pub fn spare_schema_name() -> String {
    format!("{SPARE_SCHEMA_PREFIX}{:016x}", rand::random::<u64>())
}

/// A fresh name for a spare database.
pub fn spare_database_name() -> String {
    format!("{SPARE_DATABASE_PREFIX}{:016x}", rand::random::<u64>())
}

/// `LIKE` pattern of spare schemas (the `_` of the prefix escaped).
const SPARE_SCHEMA_LIKE: &str = r"tenancy\_spare\_%";
/// `LIKE` pattern of spare databases.
const SPARE_DATABASE_LIKE: &str = r"tenancy\_spare\_db\_%";

/// Spare schemas in the database of `owner`, with their app version (0 without marker).
pub async fn spare_schemas(owner: &Client) -> Result<Vec<(String, i32)>, Error> {
    let rows = owner
        .query(
            "SELECT nspname::text, coalesce(obj_description(oid, 'pg_namespace'), '')
               FROM pg_namespace WHERE nspname LIKE $1 ORDER BY oid",
            &[&SPARE_SCHEMA_LIKE],
        )
        .await
        .map_err(Error::db("listing spare schemas"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let v = r
                .get::<_, String>(1)
                .strip_prefix(MARKER)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            (r.get(0), v)
        })
        .collect())
}

/// Creates one spare schema at the app's latest version (the tenant fast path, so it is a
/// tenant schema in every respect: RLS enabled and forced, USAGE for the runtime role).
pub async fn create_spare_schema(owner: &mut Client, app: &AppMigrations) -> Result<String, Error> {
    let name = spare_schema_name();
    create_schema_fast(owner, &name, app).await?;
    Ok(name)
}

/// Claims a spare schema at version `latest` for `schema` (a tenant's schema): in one
/// transaction, the first spare with that version that no other session is claiming
/// (`pg_try_advisory_xact_lock` on its name, the lock `create_schema_fast` holds while a
/// schema is created, so a spare being created is not taken either) is renamed to
/// `schema`. Returns whether a spare was claimed; `false` when none is available or
/// `schema` exists already (the caller falls back to creating it).
pub async fn claim_spare_schema(
    owner: &mut Client,
    schema: &str,
    latest: i32,
) -> Result<bool, Error> {
    let marker = format!("{MARKER}{latest}");
    for _ in 0..3 {
        let tx = owner
            .transaction()
            .await
            .map_err(Error::db("starting a spare claim"))?;
        // Serialises with a concurrent creation of the same tenant schema.
        tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&schema])
            .await
            .map_err(Error::db("locking a tenant schema"))?;
        let spare = tx
            .query_opt(
                "SELECT s.nspname::text FROM (
                    SELECT nspname FROM pg_namespace
                     WHERE nspname LIKE $1 AND obj_description(oid, 'pg_namespace') = $2
                     ORDER BY oid LIMIT 8) s
                  WHERE pg_try_advisory_xact_lock(hashtext(s.nspname)) LIMIT 1",
                &[&SPARE_SCHEMA_LIKE, &marker],
            )
            .await
            .map_err(Error::db("choosing a spare schema"))?;
        let Some(spare) = spare.map(|r| r.get::<_, String>(0)) else {
            return Ok(false);
        };
        // Still there under the lock (a claimer that committed just before our snapshot
        // renamed it away)?
        let still = tx
            .query_opt(
                "SELECT 1 FROM pg_namespace WHERE nspname = $1 AND obj_description(oid, 'pg_namespace') = $2",
                &[&spare, &marker],
            )
            .await
            .map_err(Error::db("checking a spare schema"))?
            .is_some();
        if !still {
            continue;
        }
        match tx
            .batch_execute(&format!(
                "ALTER SCHEMA {} RENAME TO {}",
                quote_ident(&spare),
                quote_ident(schema)
            ))
            .await
        {
            Ok(()) => {}
            Err(e) if e.code() == Some(&SqlState::DUPLICATE_SCHEMA) => return Ok(false),
            Err(e) => return Err(Error::db(format!("claiming spare schema {spare}"))(e)),
        }
        tx.commit()
            .await
            .map_err(Error::db("committing a spare claim"))?;
        return Ok(true);
    }
    Ok(false)
}

/// Drops a spare schema unless a claim holds it. Idempotent.
pub async fn drop_spare_schema(owner: &mut Client, spare: &str) -> Result<(), Error> {
    let tx = owner
        .transaction()
        .await
        .map_err(Error::db("starting a spare drop"))?;
    let locked: bool = tx
        .query_one("SELECT pg_try_advisory_xact_lock(hashtext($1))", &[&spare])
        .await
        .map_err(Error::db("locking a spare schema"))?
        .get(0);
    if locked {
        tx.batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            quote_ident(spare)
        ))
        .await
        .map_err(Error::db(format!("dropping spare schema {spare}")))?;
    }
    tx.commit()
        .await
        .map_err(Error::db("committing a spare drop"))
}

/// Spare databases of the cluster of `admin`, with the tag of each complete one
/// ([`spare_database_tag`]; `None`: not complete, e.g. left by a crash while it was being
/// finalised).
pub async fn spare_databases(admin: &Client) -> Result<Vec<(String, Option<String>)>, Error> {
    let rows = admin
        .query(
            "SELECT datname::text, shobj_description(oid, 'pg_database')
               FROM pg_database WHERE datname LIKE $1 ORDER BY oid",
            &[&SPARE_DATABASE_LIKE],
        )
        .await
        .map_err(Error::db("listing spare databases"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let of = r
                .get::<_, Option<String>>(1)
                .and_then(|c| c.strip_prefix(SPARE_DATABASE_MARKER).map(str::to_owned));
            (r.get(0), of)
        })
        .collect())
}

/// Marks a finalised spare database complete with its `tag` (secrets installed, privileges
/// granted): only then may it be claimed.
pub async fn mark_spare_database(admin: &Client, spare: &str, tag: &str) -> Result<(), Error> {
    admin
        .batch_execute(&format!(
            "COMMENT ON DATABASE {} IS {}",
            quote_ident(spare),
            tenancy_conn::quote_literal(&format!("{SPARE_DATABASE_MARKER}{tag}"))
        ))
        .await
        .map_err(Error::db(format!("marking spare database {spare}")))
}

/// Claims a complete spare database with tag `tag` ([`spare_database_tag`]) for `db` (a
/// tenant's database): in one transaction, the first such spare nobody else is claiming
/// (`pg_try_advisory_xact_lock` on its name) is renamed to `db` and its spare marker
/// removed. The spare must have no sessions (the engine never keeps connections to
/// spares; PostgreSQL waits a few seconds for closing ones). Returns whether one was
/// claimed.
pub async fn claim_spare_database(admin: &mut Client, db: &str, tag: &str) -> Result<bool, Error> {
    let marker = format!("{SPARE_DATABASE_MARKER}{tag}");
    for _ in 0..3 {
        let tx = admin
            .transaction()
            .await
            .map_err(Error::db("starting a spare database claim"))?;
        let spare = tx
            .query_opt(
                "SELECT s.datname::text FROM (
                    SELECT datname FROM pg_database
                     WHERE datname LIKE $1 AND shobj_description(oid, 'pg_database') = $2
                     ORDER BY oid LIMIT 8) s
                  WHERE pg_try_advisory_xact_lock(hashtext(s.datname)) LIMIT 1",
                &[&SPARE_DATABASE_LIKE, &marker],
            )
            .await
            .map_err(Error::db("choosing a spare database"))?;
        let Some(spare) = spare.map(|r| r.get::<_, String>(0)) else {
            return Ok(false);
        };
        let still = tx
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&spare])
            .await
            .map_err(Error::db("checking a spare database"))?
            .is_some();
        if !still {
            continue;
        }
        let sql = format!(
            "ALTER DATABASE {s} RENAME TO {d}; COMMENT ON DATABASE {d} IS NULL",
            s = quote_ident(&spare),
            d = quote_ident(db)
        );
        match tx.batch_execute(&sql).await {
            Ok(()) => {}
            Err(e) if e.code() == Some(&SqlState::DUPLICATE_DATABASE) => return Ok(false),
            Err(e) => return Err(Error::db(format!("claiming spare database {spare}"))(e)),
        }
        tx.commit()
            .await
            .map_err(Error::db("committing a spare database claim"))?;
        return Ok(true);
    }
    Ok(false)
}

/// Drops a spare database unless a claim holds it (the advisory lock is taken on a
/// session of `admin` and released right after). Idempotent.
pub async fn drop_spare_database(admin: &Client, spare: &str) -> Result<(), Error> {
    let locked: bool = admin
        .query_one("SELECT pg_try_advisory_lock(hashtext($1))", &[&spare])
        .await
        .map_err(Error::db("locking a spare database"))?
        .get(0);
    if !locked {
        return Ok(());
    }
    let r = drop_database(admin, spare).await;
    admin
        .execute("SELECT pg_advisory_unlock(hashtext($1))", &[&spare])
        .await
        .map_err(Error::db("unlocking a spare database"))?;
    r
}
