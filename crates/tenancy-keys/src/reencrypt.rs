//! Re-encryption: re-sealing a column's values sealed with older data keys.

use tenancy_core::TenantId;
use tenancy_sdk::TenantPool;

use crate::field::{sealed_version, FieldRef};
use crate::keyring::Keyring;
use crate::provider::KeyProvider;
use crate::Error;

/// A column of sealed values: `table` (optionally `schema.table`), its key column (the
/// row key of each value is the key column's text form, e.g. `42`) and the sealed
/// `bytea` column. Names are plain lowercase SQL identifiers. The values must have been
/// sealed with [`FieldRef::new`]`(table, column, key)` using these same strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedColumn {
    table: String,
    key: String,
    column: String,
}

fn check_ident(what: &str, name: &str) -> Result<(), Error> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{what} {name:?} must be a lowercase SQL identifier (a-z, 0-9, _; at most 63 bytes)"
        )))
    }
}

impl SealedColumn {
    /// Declares a sealed column, checking the names.
    pub fn new(table: &str, key: &str, column: &str) -> Result<Self, Error> {
        let parts: Vec<&str> = table.split('.').collect();
        if parts.len() > 2 {
            return Err(Error::Invalid(format!(
                "table {table:?} must be `table` or `schema.table`"
            )));
        }
        for p in &parts {
            check_ident("table", p)?;
        }
        check_ident("key column", key)?;
        check_ident("sealed column", column)?;
        Ok(SealedColumn {
            table: table.to_owned(),
            key: key.to_owned(),
            column: column.to_owned(),
        })
    }

    fn quoted_table(&self) -> String {
        self.table
            .split('.')
            .map(|p| format!("\"{p}\""))
            .collect::<Vec<_>>()
            .join(".")
    }
}

/// Progress of [`Keyring::reencrypt`], reported after each batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Rows with a sealed value visited so far.
    pub done: u64,
    /// Rows with a sealed value when the pass started (rows added later may make `done`
    /// exceed it).
    pub total: u64,
    /// Values re-sealed so far (the others were already on the current data key).
    pub resealed: u64,
}

impl<P: KeyProvider> Keyring<P> {
    /// Re-seals every value of `col` (for `tenant`) sealed with a data key older than the
    /// current one, `batch` rows per transaction, in key order, calling `progress` after
    /// each batch. A value that does not open stops the pass with its error; the batches
    /// before it stay committed, and running the pass again continues (values already on
    /// the current key are skipped). Returns the final progress.
    pub async fn reencrypt(
        &self,
        pool: &TenantPool,
        tenant: TenantId,
        col: &SealedColumn,
        batch: u32,
        mut progress: impl FnMut(Progress) + Send,
    ) -> Result<Progress, Error> {
        if batch == 0 || batch > 10_000 {
            return Err(Error::Invalid(format!(
                "batch size {batch} must be 1 to 10000"
            )));
        }
        let table = col.quoted_table();
        let (key, column) = (format!("\"{}\"", col.key), format!("\"{}\"", col.column));
        let mut tx = pool.begin_read_only(tenant).await?;
        let ty = tx
            .query_opt(
                "SELECT format_type(k.atttypid, k.atttypmod), format_type(c.atttypid, NULL) \
                 FROM pg_attribute k, pg_attribute c \
                 WHERE k.attrelid = to_regclass($1) AND k.attname = $2 AND NOT k.attisdropped \
                   AND c.attrelid = k.attrelid AND c.attname = $3 AND NOT c.attisdropped",
                &[&table, &col.key, &col.column],
            )
            .await?;
        let Some(ty) = ty else {
            return Err(Error::Invalid(format!(
                "{}.{} / {}: no such table or columns",
                col.table, col.key, col.column
            )));
        };
        let (key_type, col_type): (String, String) = (ty.get(0), ty.get(1));
        if col_type != "bytea" {
            return Err(Error::Invalid(format!(
                "sealed column {}.{} is {col_type}, not bytea",
                col.table, col.column
            )));
        }
        let total: i64 = tx
            .query_one(
                &format!("SELECT count(*) FROM {table} WHERE {column} IS NOT NULL"),
                &[],
            )
            .await?
            .get(0);
        tx.commit().await?;
        let mut state = Progress {
            done: 0,
            total: total as u64,
            resealed: 0,
        };
        let first = format!(
            "SELECT {key}::text AS row_key, {column} AS sealed FROM {table} WHERE {column} IS NOT NULL \
             ORDER BY {table}.{key} LIMIT {batch} FOR UPDATE"
        );
        let next = format!(
            "SELECT {key}::text AS row_key, {column} AS sealed FROM {table} WHERE {column} IS NOT NULL \
             AND {key} > $1::text::{key_type} ORDER BY {table}.{key} LIMIT {batch} FOR UPDATE"
        );
        let update = format!("UPDATE {table} SET {column} = $1 WHERE {key} = $2::text::{key_type}");
        let mut last: Option<String> = None;
        loop {
            let mut tx = pool.begin(tenant).await?;
            let current = self.committed_current(&mut tx).await?;
            let rows = match &last {
                None => tx.query(&first, &[]).await?,
                Some(k) => tx.query(&next, &[k]).await?,
            };
            let mut resealed = 0;
            for row in &rows {
                let (k, sealed): (String, Vec<u8>) = (row.get(0), row.get(1));
                if sealed_version(&sealed)? == current {
                    continue;
                }
                let field = FieldRef::new(&col.table, &col.column, &k)?;
                let plain = zeroize::Zeroizing::new(self.open(&mut tx, &field, &sealed).await?);
                let resealed_value = self.seal_version(&mut tx, current, &field, &plain).await?;
                tx.execute(&update, &[&resealed_value, &k]).await?;
                resealed += 1;
            }
            tx.commit().await?;
            state.done += rows.len() as u64;
            state.resealed += resealed;
            progress(state);
            match rows.last() {
                Some(r) if rows.len() == batch as usize => last = Some(r.get(0)),
                _ => return Ok(state),
            }
        }
    }
}
