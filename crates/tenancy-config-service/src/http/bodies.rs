//! The request bodies of the configuration routes as JSON Schemas: one text that is both
//! the OpenAPI document's schema of each body and what the server checks each body
//! against before anything else, so the document allows exactly what the server reads.
//!
//! What a schema cannot say is checked after it, with the status that says why:
//! a reference to a definition that does not exist is `404`; a value that does not fit
//! the stored definition it names (an entitlement's kind, a setting's JSON Schema, a
//! flag's variants) is `409`; a body whose parts contradict each other (a flag whose
//! default names no variant, rollout weights that do not sum to 10,000, a setting whose
//! default breaks its own schema, an override that expires in the past) is `422`.
//!
//! Strings hold no NUL character (U+0000): PostgreSQL cannot store it.

use std::borrow::Cow;
use std::sync::LazyLock;

use serde_json::{json, Value};
use utoipa::openapi::{RefOr, Schema};

use super::{ApiError, ApiResult, Problem, ProblemCode};
use tenancy_problem::FieldError;

/// Where the schemas are in the OpenAPI document (and in the document they are
/// checked with).
const PREFIX: &str = "#/components/schemas/";

/// The characters Rust's `str::trim` removes (Unicode `White_Space`), spelled out so
/// every regular-expression engine reads the class alike.
const WS: &str = r"\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";
/// Control characters (Unicode `Cc`, Rust's `char::is_control`).
const CC: &str = r"\u0000-\u001f\u007f-\u009f";

fn no_nul() -> Value {
    json!({"type": "string", "pattern": "^[^\\u0000]*$"})
}

/// Text with a character other than white space, without NUL.
fn not_blank(max: usize) -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": max,
        "pattern": format!("^[^\\u0000]*[^\\u0000{WS}][^\\u0000]*$")})
}

/// Text with a character other than white space, without control characters or `extra`.
fn visible(max: usize, extra: &str) -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": max,
        "pattern": format!("^[^{CC}{extra}]*[^{CC}{WS}{extra}][^{CC}{extra}]*$")})
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("{PREFIX}{name}")})
}

/// An object of `properties` (`required` among them) and nothing else.
fn closed(description: &str, required: &[&str], properties: Value) -> Value {
    let mut o = json!({"type": "object", "description": description,
        "additionalProperties": false, "properties": properties});
    if !required.is_empty() {
        o["required"] = json!(required);
    }
    o
}

/// An object whose keys are configuration keys and whose values are `value`.
fn keyed(description: &str, value: Value) -> Value {
    json!({"type": "object", "description": description,
        "propertyNames": {"type": "string", "pattern": KEY_PATTERN, "maxLength": 64},
        "additionalProperties": value})
}

/// A flag, entitlement, setting or variant key.
const KEY_PATTERN: &str = "^[a-z][a-z0-9_.-]*$";
/// An RFC 3339 date-time.
const DATE_TIME: &str = "^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$";

/// A condition of a targeting rule on `attribute`, with `op` and its operands.
fn condition(attribute: &str, op: Value, operands: (&str, Value)) -> Value {
    let (name, schema) = operands;
    let mut properties = json!({"attribute": {"type": "string", "enum": [attribute]}, "op": op});
    properties[name] = schema;
    closed(
        &format!("A test on the tenant's {attribute}"),
        &["attribute", "op", name],
        properties,
    )
}

fn values(item: Value) -> Value {
    json!({"type": "array", "items": item})
}

fn ops(names: &[&str]) -> Value {
    json!({"type": "string", "enum": names})
}

/// Every schema, by name.
fn schemas() -> Vec<(&'static str, Value)> {
    let key = || json!({"type": "string", "pattern": KEY_PATTERN, "maxLength": 64});
    let layer = |what: &str| {
        json!({
            "entitlements": keyed(&format!("Entitlement values {what} sets, by entitlement key (each defined, and of its kind)"), reference("EntitlementValue")),
            "settings": keyed(&format!("Setting values {what} sets, by setting key (each defined, and valid under its schema)"), reference("JsonValue")),
            "flags": keyed(&format!("Variants {what} forces, by flag key (each a variant of the flag)"), reference("VariantKey")),
        })
    };
    let set_op = || ops(&["in", "not_in"]);
    let description = |max: Option<usize>| {
        let mut d = no_nul();
        d["description"] = json!("What it is, for people");
        if let Some(m) = max {
            d["maxLength"] = json!(m);
        }
        d
    };
    let custom = {
        let mut c = condition(
            "custom",
            ops(&[
                "eq", "not_eq", "in", "not_in", "gt", "gte", "lt", "lte", "contains", "exists",
            ]),
            (
                "name",
                json!({"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[^\\u0000]*$"}),
            ),
        );
        // The operand: optional (null when absent), its type depends on the operator.
        c["properties"]["value"] = reference("JsonValue");
        c
    };
    let variants = {
        let mut v = keyed("Variants and their values", reference("JsonValue"));
        v["minProperties"] = json!(1);
        v
    };
    vec![
        ("JsonValue", json!({
            "description": "Any JSON value without the NUL character (U+0000) in a string or a key",
            "anyOf": [
                {"type": "null"},
                {"type": "boolean"},
                {"type": "number"},
                no_nul(),
                {"type": "array", "items": reference("JsonValue")},
                {"type": "object", "propertyNames": no_nul(), "additionalProperties": reference("JsonValue")},
            ],
        })),
        ("VariantKey", json!({"type": "string", "description": "A variant key: 1 to 64 of a-z, 0-9, '_', '-' and '.', starting with a letter",
            "pattern": KEY_PATTERN, "maxLength": 64})),
        ("EntitlementValue", json!({
            "description": "A feature's true or false, or a limit's non-negative integer (null: unlimited)",
            "anyOf": [{"type": "boolean"}, {"type": "integer", "minimum": 0, "maximum": u64::MAX}, {"type": "null"}],
        })),
        ("EntitlementBody", json!({
            "description": "An entitlement definition: a feature (on or off) or a numeric limit, with its global default",
            "oneOf": [
                closed("A feature", &["kind", "default"], json!({
                    "kind": {"type": "string", "enum": ["feature"]},
                    "default": {"type": "boolean", "description": "On or off when no plan, region or override says otherwise"},
                    "description": description(None),
                })),
                closed("A limit", &["kind", "default"], json!({
                    "kind": {"type": "string", "enum": ["limit"]},
                    "default": {"type": ["integer", "null"], "minimum": 0, "maximum": u64::MAX, "description": "The limit when no plan, region or override says otherwise; null: unlimited"},
                    "description": description(None),
                })),
            ],
        })),
        ("PlanBody", {
            let mut p = layer("the plan");
            p["display_name"] = not_blank(200);
            closed("A plan: its name and the values of its layer", &["display_name"], p)
        }),
        ("RegionBody", closed("A region's layer", &[], layer("the region"))),
        ("Condition", json!({
            "description": "One test of a targeting rule",
            "oneOf": [
                condition("tenant_id", set_op(), ("values", values(json!({"type": "string",
                    "pattern": "^(?!00000000-0000-0000-0000-000000000000$)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"})))),
                condition("plan", set_op(), ("values", values(json!({"type": "string", "pattern": "^[a-z][a-z0-9_-]*$", "maxLength": 40})))),
                condition("region", set_op(), ("values", values(json!({"type": "string", "pattern": "^[a-z][a-z0-9]*(-[a-z0-9]+)*$", "minLength": 2, "maxLength": 32})))),
                condition("placement", set_op(), ("values", values(json!({"type": "string", "enum": ["pooled", "schema", "dedicated"]})))),
                condition("tags", ops(&["any_of", "all_of", "none_of"]), ("values", values(no_nul()))),
                condition("created_at", ops(&["before", "after"]), ("value", json!({"type": "string", "pattern": DATE_TIME}))),
                custom,
            ],
        })),
        ("Rule", closed("A targeting rule: when every condition holds, serve", &["serve"], json!({
            "name": {"type": "string", "pattern": "^[^\\u0000]*$", "description": "A label explain shows"},
            "conditions": values(reference("Condition")),
            "serve": {"oneOf": [
                closed("Always this variant", &["type", "variant"], json!({
                    "type": {"type": "string", "enum": ["variant"]},
                    "variant": reference("VariantKey"),
                })),
                closed("A percentage rollout; the weights (basis points) sum to 10000", &["type", "weights"], json!({
                    "type": {"type": "string", "enum": ["rollout"]},
                    "weights": {"type": "array", "minItems": 1, "items": closed("A share", &["variant", "weight"], json!({
                        "variant": reference("VariantKey"),
                        "weight": {"type": "integer", "minimum": 0, "maximum": 10000},
                    }))},
                })),
            ]},
        }))),
        ("FlagBody", closed(
            "A flag: its variants (a boolean flag has exactly \"on\": true and \"off\": false), the variants served by default and when killed (both defined), and its rules",
            &["kind", "variants", "default_variant", "off_variant"],
            json!({
                "kind": {"type": "string", "enum": ["boolean", "multivariate"]},
                "description": description(Some(2000)),
                "variants": variants,
                "default_variant": reference("VariantKey"),
                "off_variant": reference("VariantKey"),
                "killed": {"type": "boolean"},
                "rules": {"type": "array", "maxItems": 200, "items": reference("Rule")},
            }),
        )),
        ("SettingDefBody", closed(
            "A typed setting: a JSON Schema and a default that satisfies it",
            &["schema", "default"],
            json!({
                "schema": {"description": "The JSON Schema every value of the setting satisfies",
                    "anyOf": [{"type": "boolean"}, {"type": "object", "propertyNames": no_nul(), "additionalProperties": reference("JsonValue")}]},
                "default": reference("JsonValue"),
                "description": description(None),
            }),
        )),
        ("AttributesBody", closed("A tenant's targeting attributes", &[], json!({
            "tags": {"type": "array", "maxItems": 100, "items": key()},
            "custom": {"type": "object", "maxProperties": 100,
                "propertyNames": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[^\\u0000]*$"},
                "additionalProperties": reference("JsonValue")},
        }))),
        ("OverrideBody", closed(
            "A per-tenant override: a variant of the flag, or a value of the entitlement's kind",
            &["value", "reason"],
            json!({
                "value": reference("JsonValue"),
                "reason": not_blank(2000),
                "expires_at": {"type": ["string", "null"], "pattern": DATE_TIME, "description": "When it stops applying (RFC 3339, in the future); never when absent"},
            }),
        )),
        ("BrandingBody", closed(
            "A tenant's white-label branding",
            &["display_name", "primary_color", "accent_color", "email_from_name", "email_from_address"],
            json!({
                "display_name": visible(100, ""),
                "primary_color": {"type": "string", "pattern": "^#[0-9a-fA-F]{6}$"},
                "accent_color": {"type": "string", "pattern": "^#[0-9a-fA-F]{6}$"},
                "logo_url": {"type": ["string", "null"], "maxLength": 2048,
                    "description": "An https URL with a host and without credentials",
                    "pattern": "^https://(?![^/?#]*--)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)*[a-z]([a-z0-9-]{0,61}[a-z0-9])?(/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?(\\?[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*)?$"},
                "email_from_name": visible(100, "<>\",") ,
                "email_from_address": {"type": "string", "maxLength": 254,
                    "pattern": "^(?=[^@]{1,64}@)[A-Za-z0-9_+-]+(\\.[A-Za-z0-9_+-]+)*@([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+(?=[a-z0-9-]*[a-z])[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"},
            }),
        )),
    ]
}

/// The body types of the handlers' OpenAPI descriptions: each stands for the schema of
/// its name, and brings every schema into the document.
macro_rules! body_types {
    ($($name:ident),*) => {$(
        /// The request body of the same name (see the module documentation).
        pub(super) struct $name;

        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                component(stringify!($name))
            }
        }

        impl utoipa::ToSchema for $name {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }

            fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
                schemas.extend(components());
            }
        }
    )*};
}

body_types!(
    EntitlementBody,
    PlanBody,
    RegionBody,
    FlagBody,
    SettingDefBody,
    AttributesBody,
    OverrideBody,
    BrandingBody,
    JsonValue
);

/// One schema, by name, as it is in the document.
fn component(name: &str) -> RefOr<Schema> {
    components()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, s)| s)
        .unwrap_or_default()
}

/// The schemas as the OpenAPI document's components.
pub(super) fn components() -> Vec<(String, RefOr<Schema>)> {
    schemas()
        .into_iter()
        .map(|(name, v)| {
            let s: RefOr<Schema> = serde_json::from_value(v)
                .unwrap_or_else(|e| panic!("schema {name} is not an OpenAPI schema: {e}"));
            (name.to_owned(), s)
        })
        .collect()
}

/// The schemas as one document whose `components/schemas` the references point into.
fn document() -> Value {
    let all: serde_json::Map<String, Value> = schemas()
        .into_iter()
        .map(|(n, v)| (n.to_owned(), v))
        .collect();
    json!({"components": {"schemas": all}})
}

/// A compiled body schema.
struct Compiled {
    name: &'static str,
    validator: jsonschema::Validator,
}

static COMPILED: LazyLock<Vec<Compiled>> = LazyLock::new(|| {
    let doc = document();
    schemas()
        .into_iter()
        .filter(|(n, _)| n.ends_with("Body"))
        .chain([("JsonValue", Value::Null)])
        .map(|(name, _)| {
            let mut root = doc.clone();
            root["$ref"] = json!(format!("{PREFIX}{name}"));
            let validator = jsonschema::draft202012::new(&root)
                .unwrap_or_else(|e| panic!("schema {name} does not compile: {e}"));
            Compiled { name, validator }
        })
        .collect()
});

/// Checks `body` against the schema `name` (`FlagBody`, …): a `validation` problem
/// naming each field that breaks it.
pub(super) fn check(name: &str, body: &Value) -> ApiResult<()> {
    let Some(c) = COMPILED.iter().find(|c| c.name == name) else {
        return Err(ApiError(Problem::new(ProblemCode::Internal, None)));
    };
    let errors: Vec<FieldError> = c
        .validator
        .iter_errors(body)
        .take(10)
        .map(|e| {
            let at = e.instance_path().to_string();
            let field = at.trim_start_matches('/');
            FieldError {
                field: if field.is_empty() {
                    "body".to_owned()
                } else {
                    field.to_owned()
                },
                message: e.to_string(),
            }
        })
        .collect();
    if errors.is_empty() {
        return Ok(());
    }
    let detail = errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect::<Vec<_>>()
        .join("; ");
    Err(ApiError(
        Problem::new(ProblemCode::Validation, detail).with_errors(errors),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_holds_exactly_the_schemas_the_server_checks() {
        for ((name, original), (_, parsed)) in schemas().into_iter().zip(components()) {
            let back = serde_json::to_value(&parsed).expect("serialize");
            assert_eq!(
                back, original,
                "{name} changed on its way into the document"
            );
        }
        for c in COMPILED.iter() {
            assert!(c.name == "JsonValue" || c.name.ends_with("Body"));
        }
        assert_eq!(COMPILED.len(), 9);
    }

    /// The fields a refusal names.
    fn refused(schema: &str, body: Value) -> Vec<String> {
        let e = check(schema, &body).expect_err(&format!("{schema} refuses {body}"));
        assert_eq!(e.0.status, 422, "{body}");
        e.0.errors.iter().map(|f| f.field.clone()).collect()
    }

    #[test]
    fn well_formed_bodies_pass() {
        let ok = [
            (
                "EntitlementBody",
                json!({"kind": "feature", "default": true, "description": "SSO"}),
            ),
            ("EntitlementBody", json!({"kind": "limit", "default": null})),
            ("EntitlementBody", json!({"kind": "limit", "default": 5})),
            (
                "PlanBody",
                json!({"display_name": " Pro ", "entitlements": {"sso": true, "seats": null},
                "settings": {"ui": {"locale": "de", "n": [1, {"a": null}]}}, "flags": {"new-billing": "on"}}),
            ),
            ("RegionBody", json!({})),
            (
                "FlagBody",
                json!({"kind": "multivariate", "variants": {"blue": {"hex": "#00f"}, "red": 1},
                "default_variant": "blue", "off_variant": "red", "killed": false,
                "rules": [{"name": "beta", "conditions": [
                    {"attribute": "tenant_id", "op": "in", "values": ["0b5d4e1e-8a8c-4c49-9d55-5b7c2c3f0a11"]},
                    {"attribute": "plan", "op": "not_in", "values": ["free"]},
                    {"attribute": "region", "op": "in", "values": ["eu-west"]},
                    {"attribute": "placement", "op": "in", "values": ["pooled"]},
                    {"attribute": "tags", "op": "any_of", "values": ["beta"]},
                    {"attribute": "created_at", "op": "before", "value": "2026-01-31T12:00:00.5+01:00"},
                    {"attribute": "custom", "name": "seats", "op": "gt", "value": 10},
                    {"attribute": "custom", "name": "vip", "op": "exists"}],
                  "serve": {"type": "rollout", "weights": [{"variant": "blue", "weight": 5000}, {"variant": "red", "weight": 5000}]}},
                  {"serve": {"type": "variant", "variant": "red"}}]}),
            ),
            (
                "SettingDefBody",
                json!({"schema": {"type": "string", "enum": ["en", "fr"]}, "default": "en"}),
            ),
            (
                "SettingDefBody",
                json!({"schema": true, "default": [1, "x"], "description": ""}),
            ),
            (
                "AttributesBody",
                json!({"tags": ["beta", "eu.customer"], "custom": {"Seats Max": 10}}),
            ),
            (
                "OverrideBody",
                json!({"value": "on", "reason": "support ticket 42", "expires_at": "2999-12-31T23:59:59Z"}),
            ),
            (
                "OverrideBody",
                json!({"value": null, "reason": "x", "expires_at": null}),
            ),
            (
                "BrandingBody",
                json!({"display_name": "Acme Cloud", "primary_color": "#112233", "accent_color": "#ABCDEF",
                "logo_url": "https://cdn.acme.com/logo.svg?v=2", "email_from_name": "Acme Billing",
                "email_from_address": "billing+eu@mail.acme.com"}),
            ),
            (
                "BrandingBody",
                json!({"display_name": "A", "primary_color": "#000000", "accent_color": "#000000",
                "logo_url": null, "email_from_name": "A", "email_from_address": "a@b.io"}),
            ),
            ("JsonValue", json!({"any": ["json", 1, 2.5, true, null]})),
        ];
        for (schema, body) in ok {
            if let Err(e) = check(schema, &body) {
                panic!("{schema} refuses {body}: {:?}", e.0);
            }
        }
    }

    /// A valid branding with `field` set to `value`.
    fn branding(field: &str, value: Value) -> Value {
        let mut b = json!({"display_name": "Acme", "primary_color": "#000000",
            "accent_color": "#000000", "email_from_name": "A", "email_from_address": "a@b.io"});
        b[field] = value;
        b
    }

    #[test]
    fn malformed_bodies_are_refused_naming_the_field() {
        let nul = "a\u{0}b";
        let cases: Vec<(&str, Value, &str)> = vec![
            (
                "EntitlementBody",
                json!({"kind": "feature", "default": 3}),
                "body",
            ),
            (
                "EntitlementBody",
                json!({"kind": "limit", "default": -1}),
                "body",
            ),
            (
                "EntitlementBody",
                json!({"kind": "feature", "default": true, "key": "x"}),
                "body",
            ),
            ("PlanBody", json!({"display_name": "   "}), "display_name"),
            (
                "PlanBody",
                json!({"display_name": "P", "entitlements": {"Bad Key": true}}),
                "entitlements",
            ),
            (
                "PlanBody",
                json!({"display_name": "P", "entitlements": {"sso": "yes"}}),
                "entitlements/sso",
            ),
            (
                "PlanBody",
                json!({"display_name": "P", "settings": {"ui": {"k": nul}}}),
                "settings/ui",
            ),
            (
                "PlanBody",
                json!({"display_name": "P", "flags": {"f": "ON"}}),
                "flags/f",
            ),
            ("RegionBody", json!({"region": "eu-west"}), "body"),
            (
                "FlagBody",
                json!({"kind": "boolean", "variants": {}, "default_variant": "on", "off_variant": "off"}),
                "variants",
            ),
            (
                "FlagBody",
                json!({"kind": "boolean", "variants": {"on": true}, "default_variant": "on", "off_variant": "on",
                "rules": [{"serve": {"type": "rollout", "weights": [{"variant": "on", "weight": 10001}]}}]}),
                "rules/0/serve",
            ),
            (
                "FlagBody",
                json!({"kind": "boolean", "variants": {"on": true}, "default_variant": "on", "off_variant": "on",
                "rules": [{"conditions": [{"attribute": "created_at", "op": "before", "value": "yesterday"}],
                           "serve": {"type": "variant", "variant": "on"}}]}),
                "rules/0/conditions/0",
            ),
            (
                "FlagBody",
                json!({"kind": "boolean", "variants": {"on": true}, "default_variant": "on", "off_variant": "on",
                "description": "x".repeat(2001)}),
                "description",
            ),
            (
                "SettingDefBody",
                json!({"schema": 5, "default": 1}),
                "schema",
            ),
            ("SettingDefBody", json!({"schema": {}}), "body"),
            ("AttributesBody", json!({"tags": ["Beta"]}), "tags/0"),
            ("AttributesBody", json!({"custom": {"": 1}}), "custom"),
            (
                "OverrideBody",
                json!({"value": "on", "reason": " "}),
                "reason",
            ),
            (
                "OverrideBody",
                json!({"value": "on", "reason": "x", "expires_at": "tomorrow"}),
                "expires_at",
            ),
            (
                "OverrideBody",
                json!({"value": "on", "reason": "x", "note": 1}),
                "body",
            ),
            (
                "BrandingBody",
                branding("primary_color", json!("blue")),
                "primary_color",
            ),
            (
                "BrandingBody",
                branding("logo_url", json!("http://acme.com/l.png")),
                "logo_url",
            ),
            (
                "BrandingBody",
                branding("logo_url", json!("https://u:p@acme.com/l.png")),
                "logo_url",
            ),
            (
                "BrandingBody",
                branding("email_from_name", json!("A <b>")),
                "email_from_name",
            ),
            (
                "BrandingBody",
                branding("email_from_address", json!("a@localhost")),
                "email_from_address",
            ),
            (
                "BrandingBody",
                branding("display_name", json!("Ac\u{7}me")),
                "display_name",
            ),
            ("JsonValue", json!({"k": [nul]}), "body"),
            ("JsonValue", json!({nul: 1}), "body"),
        ];
        for (schema, body, field) in cases {
            let fields = refused(schema, body.clone());
            assert!(
                fields.iter().any(|f| f == field),
                "{schema} {body}: expected {field:?} among {fields:?}"
            );
        }
    }
}
