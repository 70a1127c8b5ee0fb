//! The path parameters of the configuration routes, described with the rules the
//! handlers check them against (a malformed one is `400`).

use serde::Deserialize;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::{ObjectBuilder, Required, Type};
use utoipa::IntoParams;

/// A required string path parameter `name` matching `pattern`, of `min..=max` characters.
fn param(name: &str, description: &str, pattern: &str, min: usize, max: usize) -> Parameter {
    let schema = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .min_length((min > 0).then_some(min))
        .max_length((max > 0).then_some(max));
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

fn tenant() -> Parameter {
    param(
        "tenant",
        "The tenant id (a UUID, lowercase, not the nil one)",
        "^(?!00000000-0000-0000-0000-000000000000$)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
        0,
        0,
    )
}

fn key(of: &str) -> Parameter {
    param(
        "key",
        &format!("The {of} key: 1 to 64 of a-z, 0-9, '_', '-' and '.', starting with a letter"),
        "^[a-z][a-z0-9_.-]*$",
        0,
        64,
    )
}

/// The path parameters `$name { fields }` of a route, described by `$params`.
macro_rules! path_params {
    ($(#[$doc:meta])* $name:ident { $($field:ident),* } => $params:expr) => {
        $(#[$doc])*
        #[derive(Debug, Deserialize)]
        pub(super) struct $name {
            $(pub(super) $field: String,)*
        }

        impl IntoParams for $name {
            fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
                $params
            }
        }
    };
}

path_params!(
    /// A flag, entitlement or setting named by the path.
    KeyPath { key } => vec![key("flag, entitlement or setting")]
);

path_params!(
    /// A plan named by the path.
    PlanPath { plan } => vec![param(
        "plan",
        "The plan key: 1 to 40 of a-z, 0-9, '_' and '-', starting with a letter",
        "^[a-z][a-z0-9_-]*$",
        0,
        40,
    )]
);

path_params!(
    /// A region named by the path.
    RegionPath { region } => vec![param(
        "region",
        "The region id: 2 to 32 of a-z, 0-9 and single inner '-', starting with a letter",
        "^[a-z][a-z0-9]*(-[a-z0-9]+)*$",
        2,
        32,
    )]
);

path_params!(
    /// A tenant named by the path.
    TenantPath { tenant } => vec![tenant()]
);

path_params!(
    /// A tenant's setting named by the path.
    TenantKeyPath { tenant, key } => vec![tenant(), key("setting")]
);

path_params!(
    /// A tenant's override named by the path.
    OverridePath { tenant, kind, key } => vec![
        tenant(),
        param("kind", "What is overridden: flag or entitlement", "^(flag|entitlement)$", 0, 0),
        key("flag or entitlement"),
    ]
);

path_params!(
    /// A tenant's custom domain named by the path.
    DomainPath { tenant, hostname } => vec![
        tenant(),
        param(
            "hostname",
            "The hostname: at least two labels of a-z, 0-9 and inner '-'; the last starts with a letter",
            "^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$",
            0,
            253,
        ),
    ]
);
