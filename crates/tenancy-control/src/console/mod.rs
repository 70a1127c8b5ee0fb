//! The operator console: server-rendered HTML pages at `/console` for the people who run
//! tenants, served by `tenancy serve` next to the JSON API and kept out of its OpenAPI
//! document.
//!
//! - [`session`]: sign-in with the admin token, exchanged for a server-side session
//!   cookie; the CSRF token of every form.
//! - `layout`: the page skeleton (landmarks, navigation, skip link) and small helpers.
//! - `tenants` (search, filters, keyset paging), `tenant` (one tenant: placement, state
//!   history, plan, configuration with explanations, flags, domains, migrations,
//!   workflows, deliveries; its audit events of both logs with their chains'
//!   verification state, through `audit`), `actions` (suspend, resume, change plan,
//!   legal hold, delete, each after a confirmation step, through the API's own handlers), `flags` (the flag
//!   editor, through the configuration service's store), `plans` (the plans' entitlement
//!   editor, through the same store) and `ops` (workflows in flight and failed, webhook
//!   deliveries).
//!
//! Every response carries a strict Content-Security-Policy (`default-src 'self'`, no
//! inline script or style): the only script and style sheet are the two files under
//! `assets/`, compiled into the binary and served at `/console/static/`. maud escapes
//! every value written into a page. Every route but the sign-in page and the static
//! files needs a session (without one, a redirect to the sign-in page); every POST needs
//! the session's CSRF token (without it, 403).

mod actions;
mod audit;
mod flags;
mod layout;
mod ops;
mod plans;
pub(crate) mod session;
mod tenant;
mod tenants;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{html, Markup};
use serde::Deserialize;

use crate::auth::{token_digest, Admin};
use crate::AppState;
use session::{Session, SESSION_COOKIE, SIGN_IN_COOKIE};

/// The Content-Security-Policy of every console response.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// The signed-in operator of a request (put there by the session check).
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    id: String,
    session: Session,
    /// Where the request came from, for the audit events of the changes it makes.
    origin: crate::audit::Origin,
}

impl Ctx {
    /// The operator as the API's handlers know an administrator.
    pub(crate) fn admin(&self) -> Admin {
        Admin {
            principal: self.session.principal.clone(),
            origin: self.origin.clone(),
        }
    }

    /// Who made a change, as the change logs record it.
    pub(crate) fn actor(&self) -> String {
        format!("admin:{}", self.session.principal)
    }

    /// The CSRF token every form of this session carries.
    pub(crate) fn csrf(&self) -> &str {
        &self.session.csrf
    }
}

/// The console's routes (given their state; merged into [`crate::router_with`]).
pub fn routes(state: AppState) -> Router {
    let signed_in = Router::new()
        .route(
            "/console",
            get(|| async { Redirect::to("/console/tenants") }),
        )
        .route("/console/sign-out", post(sign_out))
        .route("/console/tenants", get(tenants::list))
        .route("/console/tenants/{id}", get(tenant::show))
        .route(
            "/console/tenants/{id}/actions",
            get(actions::confirm).post(actions::run),
        )
        .route("/console/flags", get(flags::list).post(flags::create))
        .route("/console/flags/{key}", get(flags::edit).post(flags::save))
        .route("/console/plans", get(plans::list))
        .route("/console/plans/{plan}", get(plans::edit).post(plans::save))
        .route("/console/workflows", get(ops::workflows))
        .route("/console/workflows/{id}", get(ops::workflow))
        .route("/console/deliveries", get(ops::deliveries))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_session,
        ));
    Router::new()
        .route("/console/sign-in", get(sign_in_page).post(sign_in))
        .route("/console/static/console.css", get(css))
        .route("/console/static/console.js", get(js))
        .merge(signed_in)
        .with_state(state)
        .layer(axum::middleware::from_fn(security_headers))
}

/// The headers of every console response: CSP, no sniffing, no framing, no referrer, and
/// no caching of pages (the static files may be cached).
async fn security_headers(req: Request, next: Next) -> Response {
    let static_file = req.uri().path().starts_with("/console/static/");
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if static_file {
            "public, max-age=300"
        } else {
            "no-store"
        }),
    );
    resp
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// An HTML page with this status.
pub(crate) fn html_response(status: StatusCode, page: Markup) -> Response {
    let mut r = (status, page.into_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

/// Lets a request through only with a live session, and a POST only with that session's
/// CSRF token in its form; puts the [`Ctx`] into the request.
async fn require_session(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let live = session::cookie(&parts.headers, SESSION_COOKIE)
        .map(str::to_owned)
        .and_then(|id| state.sessions().touch(&id).map(|s| (id, s)));
    let Some((id, session)) = live else {
        return Redirect::to("/console/sign-in").into_response();
    };
    let body = if parts.method == Method::POST {
        let bytes = match axum::body::to_bytes(body, crate::BODY_LIMIT).await {
            Ok(b) => b,
            Err(_) => return refused(StatusCode::PAYLOAD_TOO_LARGE, "The form is too large."),
        };
        if !form_csrf_matches(&bytes, &session.csrf) {
            return csrf_refused();
        }
        // PostgreSQL stores no NUL in text: refuse it here, with a clear message.
        if bytes.windows(3).any(|w| w.eq_ignore_ascii_case(b"%00")) {
            return refused(
                StatusCode::UNPROCESSABLE_ENTITY,
                "A field holds the NUL character (U+0000), which no value may contain.",
            );
        }
        Body::from(bytes)
    } else {
        body
    };
    let origin = crate::audit::Origin::of(&parts);
    parts.extensions.insert(Ctx {
        id,
        session,
        origin,
    });
    next.run(Request::from_parts(parts, body)).await
}

/// Whether a urlencoded form carries `csrf` equal to `expected`.
fn form_csrf_matches(form: &[u8], expected: &str) -> bool {
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(form).unwrap_or_default();
    fields
        .iter()
        .find(|(k, _)| k == "csrf")
        .is_some_and(|(_, v)| session::same_secret(v, expected))
}

fn csrf_refused() -> Response {
    refused(
        StatusCode::FORBIDDEN,
        "This form was refused: it did not carry this session's CSRF token. Reload the page and try again.",
    )
}

/// Why a page cannot be shown: answered as a short error page with this status.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl Refusal {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        refused(self.status, &self.message)
    }
}

impl From<crate::error::ApiError> for Refusal {
    fn from(e: crate::error::ApiError) -> Refusal {
        Refusal::new(e.status(), e.detail)
    }
}

/// What a page handler answers: the page, or why it cannot be shown.
pub(crate) type PageResult = Result<Response, Refusal>;

/// A short error page.
pub(crate) fn refused(status: StatusCode, message: &str) -> Response {
    html_response(
        status,
        layout::bare(
            status.canonical_reason().unwrap_or("Error"),
            html! { p role="alert" { (message) } p { a href="/console/tenants" { "Back to the console" } } },
        ),
    )
}

/// The sign-in page. A fresh CSRF token goes into a cookie and into the form; the POST
/// must send both, equal.
async fn sign_in_page(headers: HeaderMap, uri: axum::http::Uri) -> Response {
    sign_in_form(&headers, &uri, StatusCode::OK, None)
}

fn sign_in_form(
    headers: &HeaderMap,
    uri: &axum::http::Uri,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let token = session::random_token();
    let page = layout::bare(
        "Sign in",
        html! {
            h1 { "Sign in to the tenancy console" }
            @if let Some(e) = error { p.error role="alert" id="sign-in-error" { (e) } }
            form method="post" action="/console/sign-in" {
                input type="hidden" name="csrf" value=(token);
                label for="token" { "Admin token" }
                input #token type="password" name="token" autocomplete="current-password" required autofocus
                    aria-describedby=[error.map(|_| "sign-in-error")];
                button type="submit" { "Sign in" }
            }
            p.hint { "The token of " code { "tenancy serve" } " (shown once at its first start, or the one whose SHA-256 is configured)." }
        },
    );
    let mut r = html_response(status, page);
    r.headers_mut().append(
        header::SET_COOKIE,
        session::set_cookie(
            SIGN_IN_COOKIE,
            &token,
            session::over_tls(headers, uri),
            3600,
        ),
    );
    r
}

/// The sign-in form.
#[derive(Debug, Deserialize)]
pub(crate) struct SignIn {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    token: String,
}

/// Exchanges a valid admin token for a session.
async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Form(f): Form<SignIn>,
) -> Response {
    let cookie_token = session::cookie(&headers, SIGN_IN_COOKIE).unwrap_or("");
    if f.csrf.is_empty() || !session::same_secret(&f.csrf, cookie_token) {
        return csrf_refused();
    }
    let digest = token_digest(f.token.trim());
    let mut ok = subtle::Choice::from(0u8);
    for d in state.admin_digests() {
        ok |= subtle::ConstantTimeEq::ct_eq(&d[..], &digest[..]);
    }
    if f.token.trim().is_empty() || !bool::from(ok) {
        return sign_in_form(
            &headers,
            &uri,
            StatusCode::UNAUTHORIZED,
            Some("That admin token is not valid."),
        );
    }
    let id = state.sessions().create(hex::encode(&digest[..4]));
    let secure = session::over_tls(&headers, &uri);
    let mut r = Redirect::to("/console/tenants").into_response();
    let h = r.headers_mut();
    h.append(
        header::SET_COOKIE,
        session::set_cookie(SESSION_COOKIE, &id, secure, session::COOKIE_MAX_AGE),
    );
    h.append(
        header::SET_COOKIE,
        session::set_cookie(SIGN_IN_COOKIE, "", secure, 0),
    );
    r
}

/// Ends the session (its cookie no longer works, wherever it was copied to).
async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    axum::Extension(ctx): axum::Extension<Ctx>,
) -> Response {
    state.sessions().remove(&ctx.id);
    let mut r = Redirect::to("/console/sign-in").into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        session::set_cookie(SESSION_COOKIE, "", session::over_tls(&headers, &uri), 0),
    );
    r
}

/// Leaves a message for the session's next page.
pub(crate) fn flash(state: &AppState, ctx: &Ctx, message: String) {
    state.sessions().flash(&ctx.id, message);
}
