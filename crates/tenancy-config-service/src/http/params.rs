//! The path parameters of the configuration routes, with the rules the handlers check
//! them against (a malformed one is `400`).

use serde::Deserialize;
use utoipa::IntoParams;

/// A flag, entitlement or setting named by the path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(super) struct KeyPath {
    /// The key: 1 to 64 of a-z, 0-9, '_', '-' and '.', starting with a letter.
    #[param(pattern = "^[a-z][a-z0-9_.-]*$", max_length = 64)]
    pub(super) key: String,
}

/// A plan named by the path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(super) struct PlanPath {
    /// The plan key: 1 to 40 of a-z, 0-9, '_' and '-', starting with a letter.
    #[param(pattern = "^[a-z][a-z0-9_-]*$", max_length = 40)]
    pub(super) plan: String,
}

/// A region named by the path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(super) struct RegionPath {
    /// The region id: 2 to 32 of a-z, 0-9 and single inner '-', starting with a letter.
    #[param(pattern = "^[a-z][a-z0-9]*(-[a-z0-9]+)*$", min_length = 2, max_length = 32)]
    pub(super) region: String,
}

/// A tenant named by the path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(super) struct TenantPath {
    /// The tenant id (a UUID, lowercase, not the nil one).
    #[param(
        pattern = "^(?!00000000-0000-0000-0000-000000000000$)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
    )]
    pub(super) tenant: String,
}

/// A tenant's setting named by the path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(super) struct TenantKeyPath {
    /// The tenant id (a UUID, lowercase, not the nil one).
    #[param(
        pattern = "^(?!00000000-0000-0000-0000-000000000000$)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
    )]
    pub(super) tenant: String,
    /// The setting key: 1 to 64 of a-z, 0-9, '_', '-' and '.', starting with a letter.
    #[param(pattern = "^[a-z][a-z0-9_.-]*$", max_length = 64)]
    pub(super) key: String,
}

/// A tenant's override named by the path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(super) struct OverridePath {
    /// The tenant id (a UUID, lowercase, not the nil one).
    #[param(
        pattern = "^(?!00000000-0000-0000-0000-000000000000$)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
    )]
    pub(super) tenant: String,
    /// What is overridden: `flag` or `entitlement`.
    #[param(pattern = "^(flag|entitlement)$")]
    pub(super) kind: String,
    /// The flag's or entitlement's key.
    #[param(pattern = "^[a-z][a-z0-9_.-]*$", max_length = 64)]
    pub(super) key: String,
}

/// A tenant's custom domain named by the path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(super) struct DomainPath {
    /// The tenant id (a UUID, lowercase, not the nil one).
    #[param(
        pattern = "^(?!00000000-0000-0000-0000-000000000000$)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
    )]
    pub(super) tenant: String,
    /// The hostname: at least two labels of a-z, 0-9 and inner '-'; the last has a letter.
    #[param(
        pattern = "^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$",
        max_length = 253
    )]
    pub(super) hostname: String,
}
