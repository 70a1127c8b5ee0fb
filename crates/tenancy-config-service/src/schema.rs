//! Typed settings: each setting's JSON Schema, compiled and enforced on every value the
//! store is asked to write (definitions, plan and region layers, tenant values). A
//! definition whose default breaks its own schema is invalid; a value written for a
//! stored definition that its schema refuses conflicts with that definition.

use tenancy_config::model::{ModelError, SettingDef, SettingKey};

/// Compiles a setting's schema; refuses an invalid schema or a default that breaks it.
pub fn compile_setting(def: &SettingDef) -> Result<jsonschema::Validator, ModelError> {
    let v = jsonschema::validator_for(&def.schema).map_err(|e| {
        ModelError::Invalid(format!(
            "setting {}: schema is not a valid JSON Schema: {e}",
            def.key
        ))
    })?;
    check_against(&v, &def.key, &def.default)?;
    Ok(v)
}

/// Checks `value` against a compiled setting schema.
pub fn check_against(
    v: &jsonschema::Validator,
    key: &SettingKey,
    value: &serde_json::Value,
) -> Result<(), ModelError> {
    let errors: Vec<String> = v
        .iter_errors(value)
        .take(5)
        .map(|e| format!("{} (at {})", e, e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ModelError::Invalid(format!(
            "setting {key}: value does not match its schema: {}",
            errors.join("; ")
        )))
    }
}

/// Checks a value written for a stored setting definition: one its schema refuses
/// conflicts with that definition (a `Conflict`, not invalid input: the same value is
/// valid under another schema).
pub fn check_stored(
    v: &jsonschema::Validator,
    key: &SettingKey,
    value: &serde_json::Value,
) -> Result<(), tenancy_config::ConfigError> {
    check_against(v, key, value).map_err(|e| tenancy_config::ConfigError::Conflict(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_schema_is_enforced() {
        let def = SettingDef {
            key: "locale".parse().expect("key"),
            schema: serde_json::json!({"type": "string", "enum": ["en", "fr"]}),
            default: serde_json::json!("en"),
            description: String::new(),
        };
        let v = compile_setting(&def).expect("compiles");
        assert!(check_against(&v, &def.key, &serde_json::json!("fr")).is_ok());
        assert!(check_against(&v, &def.key, &serde_json::json!("de")).is_err());
        let bad_default = SettingDef {
            default: serde_json::json!(3),
            ..def.clone()
        };
        assert!(compile_setting(&bad_default).is_err());
        let bad_schema = SettingDef {
            schema: serde_json::json!({"type": 12}),
            ..def
        };
        assert!(compile_setting(&bad_schema).is_err());
    }
}
