//! `GET /v1/tenants/{id}/audit`: a tenant's audit log, one page at a time, with what an
//! offline check needs (each event's chain position and hashes, the checkpoints signed
//! over the page, the purge anchor the chain starts after).

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use tenancy_audit::{Checkpoint, Log, Recorded, StoredEvent};
use tenancy_core::{Placement, TenantId, TenantState};
use utoipa::{IntoParams, ToSchema};

use super::tenant_ref;
use crate::auth::Admin;
use crate::error::{ApiError, Problem, ProblemCode};
use crate::AppState;

/// Paging of an audit log.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Which log: `tenant` (the application's events, in the tenant's database; default)
    /// or `control` (the control plane's changes concerning the tenant).
    #[param(pattern = "^(tenant|control)$")]
    pub log: Option<String>,
    /// The `next_after` of the previous page: `<tenant id>.<log>.<chain position>`. A
    /// cursor of another tenant's or another log's pages is refused with 409.
    #[param(
        pattern = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\\.(tenant|control)\\.[0-9]{1,18}$",
        max_length = 64
    )]
    pub after: Option<String>,
    /// 1 to 500 events (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

/// A sealed event with its place in the chain. Its hash is SHA-256 over the fields
/// exactly as given here (see ARCHITECTURE.md, audit log), so a page can be verified
/// offline.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventView {
    /// Order of insertion in the tenant database (may differ from the chain order for
    /// an event whose transaction outlived a seal pass).
    pub seq: i64,
    /// Position in the tenant's chain, from 1 (or from the purge anchor's position + 1).
    pub chain_pos: i64,
    /// Recording time in microseconds since the Unix epoch (the hashed form).
    pub occurred_at_us: i64,
    /// What the event records.
    #[serde(flatten)]
    pub recorded: Recorded,
    /// The hash of the event at the previous position (hex; the anchor's hash after a
    /// purge, 32 zero bytes at position 1).
    pub prev_hash: String,
    /// This event's hash (hex).
    pub hash: String,
}

/// A signed checkpoint (or purge anchor) of the chain.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckpointView {
    /// `tenant` or `control`.
    pub log: String,
    /// The chain position it covers.
    pub chain_pos: i64,
    /// The hash of the event there (hex).
    pub head_hash: String,
    /// When it was signed, µs since the Unix epoch.
    pub signed_at_us: i64,
    /// The Ed25519 public key (hex).
    pub public_key: String,
    /// The signature (hex).
    pub signature: String,
}

/// One page of a tenant's audit log.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    /// The tenant.
    pub tenant: String,
    /// The log (`tenant` or `control`).
    pub log: String,
    /// Sealed events after the cursor, in chain order.
    pub items: Vec<AuditEventView>,
    /// Events recorded but not sealed yet (not in any page until they are).
    pub unsealed: i64,
    /// Checkpoints signed at positions of this page, and the latest one.
    pub checkpoints: Vec<CheckpointView>,
    /// The purge anchor the chain starts after (events up to its position were purged
    /// after their retention), if any.
    pub anchor: Option<CheckpointView>,
    /// The public key this control plane signs with (hex), when it has one.
    pub public_key: Option<String>,
    /// Cursor of the next page, when there may be one.
    pub next_after: Option<String>,
}

fn event_view(e: StoredEvent) -> AuditEventView {
    AuditEventView {
        seq: e.seq,
        chain_pos: e.chain_pos.unwrap_or_default(),
        occurred_at_us: e.occurred_at_us,
        recorded: e.recorded,
        prev_hash: e.prev_hash.unwrap_or_default(),
        hash: e.hash.unwrap_or_default(),
    }
}

fn checkpoint_view(c: Checkpoint) -> CheckpointView {
    CheckpointView {
        log: c.log.as_str().to_owned(),
        chain_pos: c.chain_pos,
        head_hash: c.head_hash,
        signed_at_us: c.signed_at_us,
        public_key: c.public_key,
        signature: c.signature,
    }
}

/// The cursor after chain position `pos` of `tenant`'s `log`:
/// `<tenant>.<log>.<pos>`, so a cursor names the chain it belongs to.
pub(crate) fn cursor(tenant: TenantId, log: Log, pos: i64) -> String {
    format!("{tenant}.{}.{pos}", log.as_str())
}

/// The chain position a cursor names: 422 for one that is not a cursor, 409 for one of
/// another tenant's or another log's pages.
pub(crate) fn parse_cursor(c: &str, tenant: TenantId, log: Log) -> Result<i64, ApiError> {
    let bad = || ApiError::field("after", "is not a cursor this endpoint returned");
    let mut parts = c.splitn(3, '.');
    let (Some(t), Some(l), Some(p)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let pos: i64 = p.parse().ok().filter(|p| *p >= 0).ok_or_else(bad)?;
    let t: uuid::Uuid = t.parse().map_err(|_| bad())?;
    let l = Log::parse(l).ok_or_else(bad)?;
    if t != tenant.as_uuid() || l != log {
        return Err(ApiError::new(
            ProblemCode::Conflict,
            format!(
                "the cursor belongs to the {} log of tenant {t}, not to the {} log of tenant {tenant}",
                l.as_str(),
                log.as_str()
            ),
        ));
    }
    Ok(pos)
}

/// Pages through a tenant's audit log (sealed events in chain order) with the proofs an offline check needs.
#[utoipa::path(get, path = "/v1/tenants/{id}/audit", tag = "tenants", security(("admin" = [])),
    params(("id" = String, Path, description = "Tenant id (UUID) or slug", pattern = "^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[a-z][a-z0-9]*(-[a-z0-9]+)*)$", min_length = 3, max_length = 40), AuditParams),
    responses((status = 200, body = AuditPage), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json", description = "The cursor belongs to another tenant's or another log's pages"), (status = 422, body = Problem, content_type = "application/problem+json", description = "A limit out of range, an unknown log, or a malformed cursor"), (status = 503, body = Problem, content_type = "application/problem+json", description = "The catalog or the tenant's database cannot be reached")))]
pub async fn tenant_audit(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(p): Query<AuditParams>,
) -> Result<Json<AuditPage>, ApiError> {
    let limit = p.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::field("limit", "must be between 1 and 500"));
    }
    let log = match p.log.as_deref() {
        None => Log::Tenant,
        Some(l) => {
            Log::parse(l).ok_or_else(|| ApiError::field("log", "must be tenant or control"))?
        }
    };
    let id = tenant_ref(&state, &id).await?;
    let after = p
        .after
        .as_deref()
        .map(|c| parse_cursor(c, id, log))
        .transpose()?
        .unwrap_or(0);
    let catalog = state.catalog().await?;
    let uuid = id.as_uuid();
    let unreachable = |e: &(dyn std::error::Error + 'static)| unreadable(id, e);
    let reader = open_log(&state, &catalog, id, log).await?;
    let (events, unsealed) = match reader.client(&catalog) {
        Some(c) => tenancy_audit::load_page(c, log, uuid, after, limit + 1)
            .await
            .map_err(|e| unreachable(&e))?,
        None => (Vec::new(), 0),
    };
    let more = events.len() as i64 > limit;
    let items: Vec<AuditEventView> = events
        .into_iter()
        .take(limit as usize)
        .map(event_view)
        .collect();
    let last = items.last().map_or(after, |e| e.chain_pos);
    let all = tenancy_audit::load_log_checkpoints(&*catalog, log, Some(uuid))
        .await
        .map_err(|e| unreachable(&e))?;
    let latest = all.iter().map(|c| c.chain_pos).max();
    let checkpoints = all
        .into_iter()
        .filter(|c| (c.chain_pos > after && c.chain_pos <= last) || Some(c.chain_pos) == latest)
        .map(checkpoint_view)
        .collect();
    let anchor = tenancy_audit::load_anchors(&*catalog, log, Some(uuid))
        .await
        .map_err(|e| unreachable(&e))?
        .into_iter()
        .max_by_key(|a| a.chain_pos)
        .map(checkpoint_view);
    Ok(Json(AuditPage {
        tenant: id.to_string(),
        log: log.as_str().to_owned(),
        items,
        unsealed,
        checkpoints,
        anchor,
        public_key: state.audit().map(|s| s.public_key_hex()),
        next_after: more.then(|| cursor(id, log, last)),
    }))
}

/// The answer to a tenant's audit log that cannot be read (the cause is logged).
pub(crate) fn unreadable(id: TenantId, e: &(dyn std::error::Error + 'static)) -> ApiError {
    tracing::warn!(tenant = %id, error = %tenancy_conn::ErrorText(e), "reading a tenant's audit log");
    ApiError::new(
        ProblemCode::Unavailable,
        "the tenant's audit log cannot be read right now",
    )
}

/// Where one of a tenant's audit logs is read from.
pub(crate) enum LogReader {
    /// The catalog (the control log).
    Catalog,
    /// The tenant's database (its own log).
    Tenant(tokio_postgres::Client),
    /// Nowhere: the tenant has no application events (it never served, or its database
    /// is not made yet or was dropped by its purge).
    Empty,
}

impl LogReader {
    /// The connection to read from (`catalog` for the control log), if any.
    pub(crate) fn client<'a>(
        &'a self,
        catalog: &'a tokio_postgres::Client,
    ) -> Option<&'a tokio_postgres::Client> {
        match self {
            LogReader::Catalog => Some(catalog),
            LogReader::Tenant(c) => Some(c),
            LogReader::Empty => None,
        }
    }
}

/// Opens tenant `id`'s log of `log`: the control log is in the catalog; its own log in
/// the database it is placed in (503 without an audit sealer, which holds the
/// connections to tenant databases).
pub(crate) async fn open_log(
    state: &AppState,
    catalog: &tokio_postgres::Client,
    id: TenantId,
    log: Log,
) -> Result<LogReader, ApiError> {
    if log == Log::Control {
        return Ok(LogReader::Catalog);
    }
    let sealer = state.audit().ok_or_else(|| {
        ApiError::new(
            ProblemCode::Unavailable,
            "this control plane reads no tenant audit logs (no audit sealer)",
        )
    })?;
    let t = tenancy_catalog::get_tenant(catalog, id).await?;
    // A tenant that never served (provisioning, or failed for good) has no
    // application events, and its cluster may never have been reachable.
    let never_served = match t.state {
        TenantState::Provisioning => true,
        TenantState::Deleted => tenancy_catalog::provisioning_failed(catalog, id).await?,
        _ => false,
    };
    let cluster = tenancy_catalog::get_cluster(catalog, t.cluster_id).await?;
    let dbname = match (t.placement, &t.database_name) {
        _ if never_served => None,
        (Placement::Dedicated, Some(d)) => Some(d.clone()),
        // A dedicated tenant whose database is not made yet has no events.
        (Placement::Dedicated, None) => None,
        _ => Some(cluster.dbname.clone()),
    };
    let Some(d) = dbname else {
        return Ok(LogReader::Empty);
    };
    match sealer.tenant_db(&cluster, &d).await {
        Ok(db) => Ok(LogReader::Tenant(db)),
        Err(e) if missing_database(&e) => Ok(LogReader::Empty),
        Err(e) => Err(unreadable(id, e.as_ref())),
    }
}

/// Whether connecting failed because the database does not exist (a dedicated tenant's
/// database dropped by its purge, or not made yet).
fn missing_database(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<tokio_postgres::Error>()
            .and_then(|e| e.code())
            .is_some_and(|c| *c == tokio_postgres::error::SqlState::INVALID_CATALOG_NAME)
    })
}
