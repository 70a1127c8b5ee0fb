//! Flags: definitions, the kill switch, deletion (with the overrides that name the flag).

use serde_json::Value;
use tenancy_config::model::{Flag, FlagKey};
use tenancy_config::ConfigError;

use super::{
    exec, not_found, nothing, row_json, to_json, valid, ChangeMeta, ChangeRecord, Reach, Scope,
    Store, Tx,
};

/// A flag as stored (`NotFound` when there is none).
pub(super) async fn stored_flag(tx: &Tx<'_>, key: &FlagKey) -> Result<Flag, ConfigError> {
    let def = row_json(
        tx,
        "SELECT definition FROM tenancy_catalog.config_flags WHERE key = $1",
        &[&key.as_str()],
        "reading a flag",
    )
    .await?
    .ok_or_else(|| not_found("flag", key))?;
    serde_json::from_value(def).map_err(ConfigError::corrupt)
}

/// The flag's definition, locked for the change (`None` when there is none).
async fn locked_flag(tx: &Tx<'_>, key: &str) -> Result<Option<Value>, ConfigError> {
    row_json(
        tx,
        "SELECT definition FROM tenancy_catalog.config_flags WHERE key = $1 FOR UPDATE",
        &[&key],
        "reading a flag",
    )
    .await
}

/// Writes a flag's definition stamped with version `v`.
async fn write_flag(tx: &Tx<'_>, key: &str, def: &Value, v: i64) -> Result<(), ConfigError> {
    exec(
        tx,
        "INSERT INTO tenancy_catalog.config_flags (key, definition, version) VALUES ($1, $2, $3)
         ON CONFLICT (key) DO UPDATE SET definition = EXCLUDED.definition, version = EXCLUDED.version, updated_at = now()",
        &[&key, def, &v],
        "writing a flag",
    )
    .await
}

impl Store {
    /// Creates or replaces a flag.
    pub async fn put_flag(&self, flag: &Flag, meta: &ChangeMeta) -> Result<i64, ConfigError> {
        valid(meta, flag.validate())?;
        let key = flag.key.as_str();
        let def = to_json(flag);
        let reach = Reach::Flag {
            key: key.to_owned(),
            excludes: crate::rules::excludes_regions(flag),
        };
        let prepare = async |tx: &Tx<'_>| {
            let before = locked_flag(tx, key).await?;
            let change = ChangeRecord::new("flag", key, Scope::Flag(key.to_owned()), "put")
                .before(before)
                .after(Some(def.clone()));
            Ok((change, ()))
        };
        let apply = async |tx: &Tx<'_>, v: i64, ()| write_flag(tx, key, &def, v).await;
        let (v, ()) = self
            .checked_write(meta, "committing a flag", reach, prepare, apply)
            .await?;
        Ok(v)
    }

    /// Turns a flag's kill switch on or off.
    pub async fn set_flag_killed(
        &self,
        key: &FlagKey,
        killed: bool,
        meta: &ChangeMeta,
    ) -> Result<i64, ConfigError> {
        let key = key.as_str();
        let action = if killed { "kill" } else { "unkill" };
        let prepare = async |tx: &Tx<'_>| {
            let before = locked_flag(tx, key)
                .await?
                .ok_or_else(|| not_found("flag", key))?;
            let mut after = before.clone();
            if let Some(obj) = after.as_object_mut() {
                obj.insert("killed".into(), Value::Bool(killed));
            }
            let change = ChangeRecord::new("flag", key, Scope::Flag(key.to_owned()), action)
                .before(Some(before))
                .after(Some(after.clone()));
            Ok((change, after))
        };
        let apply = async |tx: &Tx<'_>, v: i64, after: Value| write_flag(tx, key, &after, v).await;
        let (v, ()) = self
            .checked_write(
                meta,
                "committing a kill switch",
                // Killed, a flag serves its off variant: it can only stop reaching a
                // region.
                Reach::Flag {
                    key: key.to_owned(),
                    excludes: false,
                },
                prepare,
                apply,
            )
            .await?;
        Ok(v)
    }

    /// Deletes a flag (and the overrides that name it).
    pub async fn delete_flag(&self, key: &FlagKey, meta: &ChangeMeta) -> Result<i64, ConfigError> {
        let key = key.as_str();
        let prepare = async |tx: &Tx<'_>| {
            let before = row_json(
                tx,
                "DELETE FROM tenancy_catalog.config_flags WHERE key = $1 RETURNING definition",
                &[&key],
                "deleting a flag",
            )
            .await?
            .ok_or_else(|| not_found("flag", key))?;
            exec(
                tx,
                "DELETE FROM tenancy_catalog.config_overrides WHERE kind = 'flag' AND key = $1",
                &[&key],
                "deleting a flag's overrides",
            )
            .await?;
            // Overrides of many tenants may have gone: a full reload is the simple, correct answer.
            let change = ChangeRecord::new("flag", key, Scope::All, "delete").before(Some(before));
            Ok((change, ()))
        };
        let (v, ()) = self
            .checked_write(
                meta,
                "committing a flag deletion",
                Reach::Flag {
                    key: key.to_owned(),
                    excludes: false,
                },
                prepare,
                nothing,
            )
            .await?;
        Ok(v)
    }

    /// Reads a flag.
    pub async fn get_flag(&self, key: &FlagKey) -> Result<Flag, ConfigError> {
        let mut c = self.conn().await?;
        let tx = c
            .transaction()
            .await
            .map_err(ConfigError::db("starting a transaction"))?;
        let f = stored_flag(&tx, key).await?;
        tx.commit()
            .await
            .map_err(ConfigError::db("reading a flag"))?;
        Ok(f)
    }
}
