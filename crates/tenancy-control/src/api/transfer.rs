//! `POST /v1/tenants/{id}/export`: one tenant's archive (the format `tenancy tenants
//! export` writes), streamed in the answer's body as it is read out of the tenant's
//! `COPY` streams, for data-portability requests.
//!
//! Synchronous streaming, not a job: the archive goes from the tenant's transaction
//! through a 64 KiB pipe into the response body, so memory stays bounded by one archive
//! frame (about 256 KiB) and the pipe, whatever the tenant's size, and nothing is kept on
//! the server's disk. A client that stops reading holds the export (and its transaction)
//! until it resumes or the transaction's idle timeout ends it; a client that goes away
//! cancels it: the body is dropped, the export task is aborted and its transaction rolled
//! back.
//!
//! The answer's status and headers wait for the archive's first bytes, which are written
//! once the tenant's transaction is open and its tables are listed; everything that can
//! refuse an export before that (unknown tenant, a state without data access, a move in
//! progress, no free export connection) is a problem document. The last bytes of the
//! archive are held back until the export is recorded in both audit logs
//! ([`crate::transfer::record_export`]): a client holds a complete archive only if its
//! export was recorded; if recording fails the connection is cut short instead.
//! The archive's digests also go out as HTTP trailers (`Tenancy-Archive-Sha256`,
//! `Tenancy-Archive-Digest`) to a client that asks for them with `TE: trailers`; the
//! archive's own summary carries every table's count and checksum.
//!
//! Import stays on the command line (`tenancy tenants import`): it creates the tenant,
//! waits for the workers to provision it and reads the archive twice (checked whole
//! before anything is created, then loaded in one transaction), which over HTTP would
//! mean spooling a body of any size to the server's disk.

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::StreamBody;
use hyper::body::Frame;
use tenancy_audit::Log;
use tenancy_core::TenantState;
use tokio::io::{AsyncReadExt, DuplexStream};
use tokio::task::JoinHandle;
use utoipa::ToSchema;

use super::audit::{open_log, LogReader};
use super::tenant_ref;
use crate::audit::Who;
use crate::auth::Admin;
use crate::error::{ApiError, Problem, ProblemCode};
use crate::transfer::{record_export, ExportFacts};
use crate::AppState;

/// The media type of an archive.
pub const ARCHIVE_MEDIA_TYPE: &str = "application/vnd.tenancy.archive";

/// The export's id, also in its audit events.
pub const EXPORT_ID_HEADER: &str = "tenancy-export-id";
/// Trailer: SHA-256 (hex) of the whole archive.
pub const SHA256_TRAILER: &str = "tenancy-archive-sha256";
/// Trailer: the digest the archive's summary carries.
pub const DIGEST_TRAILER: &str = "tenancy-archive-digest";

/// Bytes of the pipe between the export and the response body, and of each body chunk.
const PIPE: usize = 64 << 10;

/// A tenant's archive: the bytes `tenancy tenants export` writes to its file.
#[derive(Debug, ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct TenantArchive(pub Vec<u8>);

fn tx_error(e: tenancy_sdk::Error) -> ApiError {
    match e {
        tenancy_sdk::Error::NotActive { tenant, state } => ApiError::new(
            ProblemCode::Conflict,
            format!("tenant {tenant} is {state}; it can be exported while it is active"),
        ),
        tenancy_sdk::Error::Cutover { .. } => ApiError::new(
            ProblemCode::Conflict,
            "the tenant is being switched to its new placement; export it once the move is over",
        ),
        tenancy_sdk::Error::Pool(why) => {
            tracing::warn!(error = %why, "no connection for an export");
            ApiError::new(
                ProblemCode::Unavailable,
                format!(
                    "no connection of the tenant's database is free for an export (at most {} run at once per database); try again later",
                    crate::transfer::MAX_EXPORTS
                ),
            )
            .retry_after(std::time::Duration::from_secs(10))
        }
        e => ApiError::unavailable("opening the tenant's transaction for an export", &e),
    }
}

fn export_error(e: tenancy_transfer::Error) -> ApiError {
    match e {
        tenancy_transfer::Error::Tenant(e) => tx_error(e),
        tenancy_transfer::Error::Catalog(e) => e.into(),
        e => ApiError::unavailable("exporting a tenant", &e),
    }
}

/// Why an export ended without a complete, recorded archive.
#[derive(Debug, thiserror::Error)]
enum Failed {
    #[error("{0}")]
    Export(tenancy_transfer::Error),
    #[error("recording the export: {}", .0.detail)]
    Record(ApiError),
}

/// The export task: aborted when the response body is dropped (the client went away),
/// which drops the tenant's transaction (rolled back) mid-stream.
struct Task(JoinHandle<Result<ExportFacts, Failed>>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The response body's state: the pipe's reading end, the chunk held back (sent once
/// the export is recorded), the task, and the trailers once known.
struct Streaming {
    pipe: DuplexStream,
    held: Option<Bytes>,
    task: Task,
    trailers: Option<HeaderMap>,
    done: bool,
}

async fn read_chunk(pipe: &mut DuplexStream) -> std::io::Result<Option<Bytes>> {
    let mut buf = Vec::with_capacity(PIPE);
    let n = pipe.read_buf(&mut buf).await?;
    Ok((n > 0).then(|| Bytes::from(buf)))
}

impl Streaming {
    /// The next frame of the body: the chunk before the one just read, then (once the
    /// pipe ends and the export is recorded) the chunk held back and the trailers.
    async fn next(mut self) -> Option<(Result<Frame<Bytes>, std::io::Error>, Streaming)> {
        if self.done {
            return None;
        }
        if let Some(t) = self.trailers.take() {
            self.done = true;
            return Some((Ok(Frame::trailers(t)), self));
        }
        loop {
            match read_chunk(&mut self.pipe).await {
                Ok(Some(chunk)) => {
                    if let Some(prev) = self.held.replace(chunk) {
                        return Some((Ok(Frame::data(prev)), self));
                    }
                }
                Ok(None) => {
                    let ended = (&mut self.task.0).await;
                    return match ended {
                        Ok(Ok(facts)) => {
                            self.trailers = Some(trailers(&facts));
                            match self.held.take() {
                                Some(last) => Some((Ok(Frame::data(last)), self)),
                                None => {
                                    self.done = true;
                                    self.trailers.take().map(|t| (Ok(Frame::trailers(t)), self))
                                }
                            }
                        }
                        Ok(Err(e)) => {
                            tracing::error!(error = %e, "an export ended before its archive was complete and recorded");
                            self.done = true;
                            Some((Err(std::io::Error::other(e.to_string())), self))
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "the export task ended abnormally");
                            self.done = true;
                            Some((Err(std::io::Error::other(e.to_string())), self))
                        }
                    };
                }
                Err(e) => {
                    self.done = true;
                    return Some((Err(e), self));
                }
            }
        }
    }
}

fn trailers(facts: &ExportFacts) -> HeaderMap {
    let mut t = HeaderMap::new();
    for (name, value) in [
        (SHA256_TRAILER, &facts.sha256),
        (DIGEST_TRAILER, &facts.digest),
    ] {
        if let Ok(v) = HeaderValue::from_str(value) {
            t.insert(HeaderName::from_static(name), v);
        }
    }
    t
}

/// Refuses an export the tenant's state or a move in progress rules out (409), before any
/// transaction is opened.
async fn check_exportable(
    catalog: &tokio_postgres::Client,
    t: &tenancy_catalog::Tenant,
) -> Result<(), ApiError> {
    if t.state != TenantState::Active {
        return Err(ApiError::new(
            ProblemCode::Conflict,
            format!(
                "tenant {} is {}; it can be exported while it is active{}",
                t.id,
                t.state,
                match t.state {
                    TenantState::Suspended => " (resume it first)",
                    TenantState::Provisioning => " (wait for its provisioning to end)",
                    _ => "",
                }
            ),
        ));
    }
    let moving: bool = catalog
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM tenancy_catalog.workflows
                             WHERE tenant_id = $1 AND kind = 'move'
                               AND status IN ('pending', 'running', 'compensating'))",
            &[&t.id.as_uuid()],
        )
        .await
        .map_err(|e| ApiError::unavailable("looking for a move in progress", &e))?
        .get(0);
    if moving {
        return Err(ApiError::new(
            ProblemCode::Conflict,
            format!(
                "tenant {} is being moved; export it once the move is over",
                t.id
            ),
        ));
    }
    Ok(())
}

/// The file name an archive is offered under: the slug and the time, UTC.
fn file_name(slug: &str, at: time::OffsetDateTime) -> String {
    format!(
        "{slug}-{:04}{:02}{:02}T{:02}{:02}{:02}Z.tenancy",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// One tenant's rows as an archive (the format of `tenancy tenants export`, which
/// `tenancy tenants import` reads), streamed as it is read from the tenant's own
/// transaction (memory bounded, whatever the tenant's size). The export is recorded as
/// `tenant.export` in the control log and in the tenant's audit log (who, the archive's
/// digests, each table's rows and checksum, the request id and client address) before
/// the archive's last bytes are sent; a client that goes away cancels it. The archive's
/// summary frame holds every table's count and checksum and its digest; with `TE:
/// trailers` the digests also come as trailers.
#[utoipa::path(post, path = "/v1/tenants/{id}/export", tag = "tenants", security(("admin" = [])),
    params(("id" = String, Path, description = "Tenant id (UUID) or slug", pattern = "^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[a-z][a-z0-9]*(-[a-z0-9]+)*)$", min_length = 3, max_length = 40)),
    responses(
        (status = 200, description = "The archive, streamed (chunked); its last bytes follow once the export is recorded", content((TenantArchive = "application/vnd.tenancy.archive")),
            headers(
                ("Content-Disposition" = String, description = "attachment; filename=\"<slug>-<UTC time>.tenancy\""),
                ("Tenancy-Export-Id" = String, description = "The export's id, as its audit events record it"),
                ("Trailer" = String, description = "The trailers sent to a client that accepts them (TE: trailers): Tenancy-Archive-Sha256 (SHA-256 of the whole archive) and Tenancy-Archive-Digest (the digest its summary carries)"),
            )),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "The tenant cannot be exported now: it is not active (provisioning, suspended, deleted), or it is being moved"),
        (status = 503, body = Problem, content_type = "application/problem+json", description = "The catalog or the tenant's database cannot be reached, or every export connection is busy (see Retry-After)",
            headers(("Retry-After" = i64, description = "Seconds to wait before retrying")))))]
pub async fn export_tenant(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let access = state.tenant_access().cloned().ok_or_else(|| {
        ApiError::new(
            ProblemCode::Unavailable,
            "this control plane opens no tenant transactions",
        )
    })?;
    let id = tenant_ref(&state, &id).await?;
    let (plan, slug) = {
        let catalog = state.catalog().await?;
        let t = tenancy_catalog::get_tenant(&catalog, id).await?;
        check_exportable(&catalog, &t).await?;
        // The tenant's database gets the audit table now (as the owner role) if it has
        // none yet, so that the export's event can be recorded once it is over.
        match open_log(&state, &catalog, id, Log::Tenant).await? {
            LogReader::Tenant(_) => {}
            _ => {
                return Err(ApiError::new(
                    ProblemCode::Conflict,
                    format!("tenant {id} has no database in service"),
                ))
            }
        }
        let plan = tenancy_transfer::ExportPlan::read(&catalog, id)
            .await
            .map_err(export_error)?;
        (plan, t.slug.to_string())
    };
    let export_id = uuid::Uuid::new_v4();
    let who = Who::admin(&admin);
    let (mut reader, writer) = tokio::io::duplex(PIPE);
    let task_state = state.clone();
    let task = Task(tokio::spawn(async move {
        let mut writer = writer;
        let summary = tenancy_transfer::export_planned(
            access.transfer_router(),
            plan,
            &mut writer,
            &tenancy_transfer::NoProgress,
        )
        .await
        .map_err(Failed::Export)?;
        drop(writer);
        let facts = ExportFacts::new(export_id, "api", &summary);
        let mut catalog = task_state.catalog().await.map_err(Failed::Record)?;
        record_export(&mut catalog, access.router(), id, &who, &facts)
            .await
            .map_err(|e| Failed::Record(ApiError::internal("recording an export", &e)))?;
        tracing::info!(tenant_id = %id, export_id = %export_id, rows = facts.rows, bytes = facts.bytes, sha256 = %facts.sha256, "tenant exported");
        Ok(facts)
    }));
    // The first bytes (the archive's header, written once the tenant's transaction is
    // open), or the error that came before them.
    let first = read_chunk(&mut reader)
        .await
        .map_err(|e| ApiError::internal("reading an export's first bytes", &e))?;
    let Some(first) = first else {
        let mut task = task;
        return Err(match (&mut task.0).await {
            Ok(Err(Failed::Export(e))) => export_error(e),
            Ok(Err(Failed::Record(e))) => e,
            Ok(Ok(_)) => ApiError::new(ProblemCode::Internal, "the export wrote nothing"),
            Err(e) => ApiError::internal("the export task", &e),
        });
    };
    let streaming = Streaming {
        pipe: reader,
        held: Some(first),
        task,
        trailers: None,
        done: false,
    };
    let body = StreamBody::new(futures_util::stream::unfold(streaming, Streaming::next));
    let now = time::OffsetDateTime::now_utc();
    let disposition = format!("attachment; filename=\"{}\"", file_name(&slug, now));
    let mut resp = Response::new(Body::new(body));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(ARCHIVE_MEDIA_TYPE),
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&export_id.to_string()) {
        h.insert(HeaderName::from_static(EXPORT_ID_HEADER), v);
    }
    h.insert(
        header::TRAILER,
        HeaderValue::from_static("Tenancy-Archive-Sha256, Tenancy-Archive-Digest"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp.into_response())
}
