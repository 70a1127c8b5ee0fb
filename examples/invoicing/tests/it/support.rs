//! A running invoicing app on a fresh database, and a small HTTP client.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tenancy_axum::jwt::{JwtConfig, JwtIssuer, JwtKey, TenantClaim};
use tenancy_axum::Source;
use tenancy_catalog::{NewCluster, NewTenant};
use tenancy_core::{ContextKey, Placement, TenantId, TenantState};
use tenancy_pg::testing::{TemplateDb, TestDb};
use tenancy_sdk::bootstrap::{OWNER_ROLE, RUNTIME_ROLE, WORKER_ROLE};
use tenancy_sdk::ClusterCredentials;
use tokio_postgres::{Client, NoTls};

static TEMPLATE: TemplateDb = TemplateDb::new("invoicing_tpl");

pub(crate) const KEY_HEX: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
pub(crate) const BASE_DOMAIN: &str = "invoicing.test";
pub(crate) const DEV_ISS: &str = "invoicing-dev";
pub(crate) const AUD: &str = "invoicing";
pub(crate) const IDP_ISS: &str = "https://idp.test";
pub(crate) const JWKS_ISS: &str = "https://jwks.test";
pub(crate) const OTHER_ISS: &str = "https://other-idp.test";
pub(crate) const HS_SECRET: &[u8] = b"test-secret-of-at-least-32-bytes!!";

pub(crate) fn key() -> ContextKey {
    ContextKey::from_hex("test".parse().expect("kid"), KEY_HEX).expect("key")
}

pub(crate) fn data(name: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    std::fs::read(&p).expect("test key file")
}

pub(crate) async fn connect(cfg: tokio_postgres::Config) -> Client {
    let (client, conn) = cfg.connect(NoTls).await.expect("connect");
    tokio::spawn(conn);
    client
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Claims for `tenant` from `iss`, valid for an hour, with every scope the app checks,
/// for an owner: `roles` (the dev and JWKS issuers' role claim) and `groups` (the
/// identity provider's).
pub(crate) fn claims(iss: &str, tenant: TenantId) -> Value {
    json!({"iss": iss, "aud": AUD, "sub": "user-1", "tenant_id": tenant.to_string(),
           "iat": now(), "exp": now() + 3600, "scope": invoicing::SCOPES.join(" "),
           "roles": "owner", "groups": ["invoicing-owners"]})
}

/// Which claim values mean which role, per issuer: the dev and JWKS issuers name roles in
/// `roles` by their own names; the identity provider names groups in `groups`; the other
/// issuer has no mapping, so its tokens hold only stored grants.
pub(crate) fn role_claims() -> Vec<invoicing::ClaimRoles> {
    let by_name = |iss: &str| {
        ["owner", "admin", "member", "viewer"]
            .into_iter()
            .fold(invoicing::ClaimRoles::new(iss, "roles"), |m, r| m.map(r, r))
    };
    vec![
        by_name(DEV_ISS),
        by_name(JWKS_ISS),
        invoicing::ClaimRoles::new(IDP_ISS, "groups")
            .map("invoicing-owners", "owner")
            .map("invoicing-admins", "admin")
            .map("invoicing-viewers", "viewer"),
    ]
}

/// Signs `claims` with `alg` and the key in `pem_or_secret`.
pub(crate) fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value, kid: Option<&str>) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&h, claims, key).expect("sign")
}

pub(crate) fn hs_key() -> EncodingKey {
    EncodingKey::from_secret(HS_SECRET)
}
pub(crate) fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(&data("rsa_private.pem")).expect("rsa")
}
pub(crate) fn rsa2_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(&data("rsa2_private.pem")).expect("rsa2")
}
pub(crate) fn ec_key() -> EncodingKey {
    EncodingKey::from_ec_pem(&data("ec_private.pem")).expect("ec")
}
pub(crate) fn ed_key() -> EncodingKey {
    EncodingKey::from_ed_pem(&data("ed_private.pem")).expect("ed")
}

/// A dev-issuer (HS256) token for `tenant`.
pub(crate) fn token(tenant: TenantId) -> String {
    sign(Algorithm::HS256, &hs_key(), &claims(DEV_ISS, tenant), None)
}

/// A dev-issuer token for `tenant` whose claims are changed by `edit` (e.g. to drop the
/// scopes).
pub(crate) fn token_with(tenant: TenantId, edit: impl FnOnce(&mut Value)) -> String {
    let mut c = claims(DEV_ISS, tenant);
    edit(&mut c);
    sign(Algorithm::HS256, &hs_key(), &c, None)
}

fn jwks_json() -> String {
    let enc = EncodingKey::from_rsa_pem(&data("rsa2_private.pem")).expect("rsa2");
    let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&enc, Algorithm::RS256).expect("jwk");
    jwk.common.key_id = Some("jwks-1".into());
    serde_json::to_string(&json!({ "keys": [jwk] })).expect("jwks json")
}

fn sources(jwks_path: &std::path::Path) -> Vec<Source> {
    let jwt = JwtConfig::new(TenantClaim::Id("tenant_id".into()))
        .issuer(JwtIssuer::new(DEV_ISS, AUD).key(JwtKey::hs256(HS_SECRET).expect("hs")))
        .issuer(
            JwtIssuer::new(IDP_ISS, AUD)
                .key(JwtKey::rs256_pem(&data("rsa_public.pem")).expect("rs"))
                .key(JwtKey::es256_pem(&data("ec_public.pem")).expect("es"))
                .key(JwtKey::eddsa_pem(&data("ed_public.pem")).expect("ed")),
        )
        .issuer(
            JwtIssuer::new(JWKS_ISS, AUD)
                .jwks_file(jwks_path)
                .expect("jwks"),
        )
        // Another trusted issuer with its own key: its signatures must not vouch for
        // tokens claiming to come from IDP_ISS.
        .issuer(
            JwtIssuer::new(OTHER_ISS, AUD)
                .key(JwtKey::hs256(b"other-issuer-secret-32-bytes-long!!").expect("hs")),
        );
    vec![
        Source::jwt(jwt),
        Source::subdomain(BASE_DOMAIN),
        Source::custom_domain(),
        Source::api_key(),
        Source::trusted_header("x-tenant-id").expect("header"),
        Source::path_prefix("/t"),
    ]
}

/// A running app with tenants on a fresh database.
pub(crate) struct Env {
    pub db: TestDb,
    pub owner: Client,
    pub base: String,
    pub acme: TenantId,
    pub globex: TenantId,
    /// Suspended, provisioning and deleting tenants.
    pub initech: TenantId,
    pub hooli: TenantId,
    pub umbrella: TenantId,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: TempDir,
    /// PgBouncer in front of the cluster, when the app reaches it that way.
    _bouncer: Option<tenancy_pg::PgBouncer>,
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// A directory removed on drop.
pub(crate) struct TempDir(pub std::path::PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) async fn fresh_db() -> TestDb {
    tenancy_test_support::fresh_catalog_db_with(&TEMPLATE, key(), async |owner| {
        invoicing::migrate(owner)
            .await
            .map_err(|e| format!("{e:#}"))?;
        Ok(())
    })
    .await
}

/// Registers `db` as the one cluster of region `eu-west` in its own catalog and creates
/// pooled tenants with the given slugs and states (`None`: left provisioning). Returns the
/// owner's connection and the tenants' ids in order.
pub(crate) async fn catalog_with_tenants(
    db: &TestDb,
    tenants: &[(&str, Option<TenantState>)],
) -> (Client, Vec<TenantId>) {
    catalog_with_tenants_at(db, tenants, None).await
}

/// [`catalog_with_tenants`], the cluster registered at `at` (host, port) instead of the
/// test cluster's own socket (PgBouncer in front of it).
pub(crate) async fn catalog_with_tenants_at(
    db: &TestDb,
    tenants: &[(&str, Option<TenantState>)],
    at: Option<(String, u16)>,
) -> (Client, Vec<TenantId>) {
    let (host, port) = at.unwrap_or_else(|| {
        (
            db.cluster.socket_dir().display().to_string(),
            db.cluster.port(),
        )
    });
    let mut owner = connect(db.config_as(OWNER_ROLE)).await;
    let region = "eu-west".parse().expect("region");
    tenancy_catalog::add_region(&owner, &region, "EU")
        .await
        .expect("region");
    tenancy_catalog::add_cluster(
        &owner,
        &NewCluster {
            name: "pg-1".into(),
            region: region.clone(),
            location: tenancy_catalog::ClusterLocation {
                host,
                port,
                dbname: db.name.clone(),
            },
            capacity: 100,
        },
    )
    .await
    .expect("cluster");
    let mut ids = Vec::new();
    for &(slug, state) in tenants {
        let t = tenancy_catalog::create_tenant(
            &mut owner,
            &NewTenant {
                id: None,
                slug: slug.parse().expect("slug"),
                display_name: slug.into(),
                plan: "pro".parse().expect("plan"),
                region: region.clone(),
                placement: Placement::Pooled,
            },
            "test",
        )
        .await
        .expect("tenant");
        if let Some(s) = state {
            tenancy_catalog::set_state(&mut owner, t.id, TenantState::Active, "test", "ready")
                .await
                .expect("activate");
            if s != TenantState::Active {
                tenancy_catalog::set_state(&mut owner, t.id, s, "test", "test")
                    .await
                    .expect("state");
            }
        }
        ids.push(t.id);
    }
    (owner, ids)
}

pub(crate) async fn start() -> Env {
    start_with(None).await
}

/// The app with its tenant connections through PgBouncer in transaction mode (catalog and
/// job queue direct), `Pooler::Transaction`.
pub(crate) async fn start_through_pgbouncer() -> Env {
    start_with(Some(tenancy_sdk::Pooler::Transaction)).await
}

async fn start_with(pooler: Option<tenancy_sdk::Pooler>) -> Env {
    let db = fresh_db().await;
    let bouncer = match pooler {
        Some(_) => Some(
            tenancy_pg::PgBouncer::start(
                db.cluster,
                tenancy_pg::PgBouncerOptions {
                    users: vec![RUNTIME_ROLE.to_owned()],
                    default_pool_size: 3,
                    ..Default::default()
                },
            )
            .await
            .expect("pgbouncer"),
        ),
        None => None,
    };
    let at = bouncer.as_ref().map(|b| ("127.0.0.1".to_owned(), b.port()));
    let (owner, ids) = catalog_with_tenants_at(
        &db,
        &[
            ("acme", Some(TenantState::Active)),
            ("globex", Some(TenantState::Active)),
            ("initech", Some(TenantState::Suspended)),
            ("hooli", None),
            ("umbrella", Some(TenantState::Deleting)),
        ],
        at,
    )
    .await;
    let dir = std::env::temp_dir().join(format!("invoicing-it-{}-{}", std::process::id(), db.name));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let jwks = dir.join("jwks.json");
    std::fs::write(&jwks, jwks_json()).expect("write jwks");
    let app = invoicing::build(invoicing::Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        catalog: db.config_as(RUNTIME_ROLE).into(),
        queue_db: db.config_as(WORKER_ROLE).into(),
        credentials: ClusterCredentials {
            user: RUNTIME_ROLE.into(),
            password: None,
        },
        context_key: key(),
        job_key: [9u8; 32],
        sources: sources(&jwks),
        run_worker: true,
        pooler: pooler.unwrap_or_default(),
        access: invoicing::AccessConfig {
            role_claims: role_claims(),
        },
    })
    .await
    .expect("build app");
    let base = format!("http://127.0.0.1:{}", app.port());
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    Env {
        db,
        owner,
        base,
        acme: ids[0],
        globex: ids[1],
        initech: ids[2],
        hooli: ids[3],
        umbrella: ids[4],
        stop: Some(stop),
        _dir: TempDir(dir),
        _bouncer: bouncer,
    }
}

/// An HTTP response.
#[derive(Debug)]
pub(crate) struct Resp {
    pub status: u16,
    pub content_type: String,
    /// The `X-Request-Id` response header.
    pub request_id: Option<String>,
    /// The `traceparent` response header.
    pub traceparent: Option<String>,
    pub body: Value,
}

impl Resp {
    /// The problem code of a problem+json response.
    pub(crate) fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    /// The body without its `request_id` (which differs on every request), for comparing
    /// what two answers say.
    pub(crate) fn said(&self) -> Value {
        let mut b = self.body.clone();
        if let Some(o) = b.as_object_mut() {
            o.remove("request_id");
        }
        b
    }
}

impl Env {
    /// Sends a request; `headers` may include `host`.
    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Resp {
        let addr = self.base.trim_start_matches("http://").to_owned();
        let stream = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect to app");
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let mut b = hyper::Request::builder().method(method).uri(path);
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            b = b.header("host", addr.as_str());
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let bytes = match body {
            Some(v) => {
                b = b.header("content-type", "application/json");
                Bytes::from(serde_json::to_vec(&v).expect("json"))
            }
            None => Bytes::new(),
        };
        let req = b.body(Full::new(bytes)).expect("request");
        let resp = sender.send_request(req).await.expect("send");
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let request_id = resp
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let traceparent = resp
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        let body = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()))
        };
        Resp {
            status,
            content_type,
            request_id,
            traceparent,
            body,
        }
    }

    /// A request as `tenant` with a dev token.
    pub(crate) async fn as_tenant(
        &self,
        tenant: TenantId,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Resp {
        let auth = format!("Bearer {}", token(tenant));
        self.call(method, path, &[("authorization", &auth)], body)
            .await
    }

    /// Creates a customer and an invoice with two lines for `tenant`; returns their ids.
    pub(crate) async fn seed(&self, tenant: TenantId, tag: &str) -> (String, String) {
        let c = self
            .as_tenant(tenant, "POST", "/customers", Some(json!({"name": format!("{tag} customer"), "email": format!("billing@{tag}.example")})))
            .await;
        assert_eq!(c.status, 201, "{c:?}");
        let cid = c.body["id"].as_str().expect("customer id").to_owned();
        let i = self
            .as_tenant(
                tenant,
                "POST",
                "/invoices",
                Some(
                    json!({"customer_id": cid, "number": format!("{tag}-0001"), "lines": [
                        {"description": "Widgets", "quantity": 3, "unit_price_cents": 1000},
                        {"description": "Support", "quantity": 1, "unit_price_cents": 5000}
                    ]}),
                ),
            )
            .await;
        assert_eq!(i.status, 201, "{i:?}");
        (cid, i.body["id"].as_str().expect("invoice id").to_owned())
    }
}

/// Polls `f` until it returns true or `timeout` passes.
pub(crate) async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    loop {
        if f().await {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
