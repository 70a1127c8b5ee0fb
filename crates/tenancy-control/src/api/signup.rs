//! Self-service signup: slug availability and signups, with their per-address quota.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Json;
use serde::{Deserialize, Serialize};
use tenancy_catalog::NewTenant;
use tenancy_core::{Placement, Slug};
use tenancy_provision::ProvisionRequest;
use utoipa::{IntoParams, ToSchema};

use super::tenants::Accepted;
use super::{check_display_name, parse_body, parse_field};
use crate::error::{ApiError, Problem, ProblemCode};
use crate::guard::ClientIp;
use crate::{idempotency, AppState};

/// Self-service signup.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Signup {
    /// The slug to sign up with.
    #[schema(schema_with = super::slug_schema)]
    pub slug: String,
    /// The name people will see.
    #[schema(schema_with = super::display_name_schema)]
    pub display_name: String,
    /// A registered region; defaults to the configured signup region.
    #[schema(
        pattern = "^[a-z][a-z0-9]*(-[a-z0-9]+)*$",
        min_length = 2,
        max_length = 32
    )]
    pub region: Option<String>,
}

/// Slug availability.
#[derive(Debug, Serialize, ToSchema)]
pub struct Availability {
    /// The slug asked about.
    pub slug: String,
    /// Whether a signup with it would be accepted now.
    pub available: bool,
    /// Why not, when not.
    pub reason: Option<String>,
}

/// Slug to check.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SlugParam {
    /// Any text (without NUL): the answer says whether it is an available slug, and why
    /// not.
    #[param(pattern = "^[^\\u0000]*$")]
    pub slug: String,
}

/// Says whether a slug is free for a signup.
#[utoipa::path(get, path = "/v1/signup/availability", tag = "signup", params(SlugParam),
    responses((status = 200, body = Availability),
              (status = 429, body = Problem, content_type = "application/problem+json", description = "Rate limit of this client or of everyone (limits.availability)",
               headers(("Retry-After" = u64, description = "Seconds to wait before retrying")))))]
pub async fn availability(
    State(state): State<AppState>,
    Query(p): Query<SlugParam>,
) -> Result<Json<Availability>, ApiError> {
    let slug = match p.slug.parse::<Slug>() {
        Ok(s) => s,
        Err(e) => {
            return Ok(Json(Availability {
                slug: p.slug,
                available: false,
                reason: Some(e.to_string()),
            }))
        }
    };
    let conn = state.catalog().await?;
    let taken = tenancy_catalog::slug_taken(&conn, &slug).await?;
    Ok(Json(Availability {
        slug: p.slug,
        available: !taken,
        reason: taken.then(|| "already taken".to_owned()),
    }))
}

/// Signs a tenant up (no credential; rate-limited): creates it and queues its provision workflow.
#[utoipa::path(post, path = "/v1/signup", tag = "signup", request_body = Signup,
    params(("Idempotency-Key" = String, Header, description = "Client-chosen key (required)")),
    responses((status = 202, body = Accepted), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json"),
              (status = 429, body = Problem, content_type = "application/problem+json", description = "Rate limit (limits.signup) or this client's signup quota (signup.max_signups_per_ip) reached",
               headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
              (status = 503, body = Problem, content_type = "application/problem+json", description = "Signup quota of everyone together (signup.max_signups) reached",
               headers(("Retry-After" = u64, description = "Seconds to wait before retrying")))))]
pub async fn signup(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIp>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (req, raw): (Signup, _) = parse_body(&headers, body)?;
    idempotency::run(
        &state,
        &headers,
        "signup:POST /v1/signup".into(),
        &raw,
        move |state| async move {
            let s = state.signup();
            let region = req.region.clone().unwrap_or_else(|| s.region.clone());
            let new = NewTenant {
                id: None,
                slug: parse_field("slug", &req.slug)?,
                display_name: req.display_name.clone(),
                plan: parse_field("plan", &s.plan)?,
                region: parse_field("region", &region)?,
                placement: parse_field::<Placement>("placement", &s.placement)?,
            };
            check_display_name(&new.display_name)?;
            // The actor records the client address, which the quota counts by.
            let actor = match client.label() {
                Some(ip) => format!("signup:{ip}"),
                None => "signup".to_owned(),
            };
            let mut conn = state.catalog().await?;
            let tx = conn
                .transaction()
                .await
                .map_err(|e| ApiError::internal("starting a transaction", &e))?;
            signup_quota(&tx, s, client.label().is_some().then_some(actor.as_str())).await?;
            let (t, wf) = state
                .provisioner()
                .provision_in(
                    &tx,
                    &ProvisionRequest {
                        tenant: new,
                        billing_customer: None,
                        billing_subscription: None,
                    },
                    &actor,
                )
                .await?;
            let origin = crate::audit::Origin {
                client: client.0,
                ..crate::audit::Origin::default()
            };
            let who = crate::audit::Who::named(&actor, origin);
            let target = format!("tenant:{}", t.id);
            crate::audit::record(&tx, Some(t.id), &who, "tenant.signup", target, None, None)
                .await
                .map_err(|e| ApiError::internal("recording a control-plane audit event", &e))?;
            tx.commit()
                .await
                .map_err(|e| ApiError::internal("committing a signup", &e))?;
            state.provisioner().wake();
            Ok(Accepted::reply(&t, &wf))
        },
    )
    .await
}

/// Refuses the signup when the quota of everyone (503) or of this client (`actor`, 429)
/// is reached within the window; both count the signups recorded in the catalog (their
/// provision workflows), so restarts and several control-plane processes share them. The
/// check holds a transaction-scoped advisory lock until the caller commits the new
/// tenant, so concurrent signups cannot both take the last place.
async fn signup_quota(
    tx: &tokio_postgres::Transaction<'_>,
    cfg: &crate::SignupConfig,
    actor: Option<&str>,
) -> Result<(), ApiError> {
    if cfg.max_signups == 0 && cfg.max_signups_per_ip == 0 {
        return Ok(());
    }
    let db = |e: tokio_postgres::Error| ApiError::internal("counting signups", &e);
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('tenancy_control.signup_quota', 0))",
        &[],
    )
    .await
    .map_err(db)?;
    let window = cfg.quota_window_secs as f64;
    // Seconds until the oldest counted signup (of everyone, of this client) leaves the
    // window: when a refused client may try again.
    let row = tx
        .query_one(
            "SELECT count(*),
                    count(*) FILTER (WHERE actor = $2::text),
                    extract(epoch FROM min(created_at) - (now() - $1::float8 * interval '1 second'))::float8,
                    extract(epoch FROM min(created_at) FILTER (WHERE actor = $2)
                                       - (now() - $1::float8 * interval '1 second'))::float8
               FROM tenancy_catalog.workflows
              WHERE kind = 'provision' AND actor LIKE 'signup%'
                AND created_at > now() - $1::float8 * interval '1 second'",
            &[&window, &actor.unwrap_or("")],
        )
        .await
        .map_err(db)?;
    let (all, mine): (i64, i64) = (row.get(0), row.get(1));
    let wait = |secs: Option<f64>| {
        std::time::Duration::from_secs_f64(secs.unwrap_or(window).clamp(1.0, window.max(1.0)))
    };
    if actor.is_some() && cfg.max_signups_per_ip > 0 && mine >= i64::from(cfg.max_signups_per_ip) {
        return Err(ApiError::new(
            ProblemCode::SignupQuotaExceeded,
            format!(
                "this address has signed up {mine} times within {} hours, the most allowed; retry after the number of seconds in Retry-After",
                cfg.quota_window_secs / 3600
            ),
        )
        .retry_after(wait(row.get(3))));
    }
    if cfg.max_signups > 0 && all >= i64::from(cfg.max_signups) {
        return Err(ApiError::new(
            ProblemCode::SignupsPaused,
            "signups are paused: the number of signups allowed in this period is reached; retry after the number of seconds in Retry-After",
        )
        .retry_after(wait(row.get(2))));
    }
    Ok(())
}
