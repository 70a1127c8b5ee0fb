//! The demo: a private cluster, two tenants, isolation shown through the SDK and the
//! example application.

use anyhow::{bail, Context, Result};

/// Prints a line on stdout. A closed stdout (`tenancy-demo | head -2`) is not an error:
/// the demo runs to its end, and stops its clusters, without printing the rest.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}
use tenancy_catalog::{NewCluster, NewTenant};
use tenancy_core::{ContextKey, Placement, TenantId, TenantState};
use tenancy_pg::{Cluster, ClusterOptions};
use tenancy_sdk::bootstrap::{self, OWNER_ROLE, RUNTIME_ROLE, WORKER_ROLE};
use tenancy_sdk::{ClusterCredentials, Router, RouterOptions};

/// Options of `tenancy-demo`.
#[derive(clap::Args, Debug)]
pub(crate) struct DemoArgs {
    /// Keep the cluster and the example app running after the demo, print how to call the
    /// app as each tenant (curl commands with ready-made tokens), until Ctrl-C.
    #[arg(long, alias = "serve")]
    keep_running: bool,
    /// Port of the example app on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// After the demo, run `tenancy check --probe` against the demo database (the example
    /// app's tables included) and fail when it reports an error finding.
    #[arg(long)]
    check: bool,
}

const APP_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS invoices (
    tenant_id    uuid NOT NULL,
    id           uuid NOT NULL DEFAULT gen_random_uuid(),
    number       text NOT NULL,
    amount_cents bigint NOT NULL CHECK (amount_cents >= 0),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, number)
);
SELECT tenancy.make_tenant_table('invoices');
";

async fn connect(cfg: tokio_postgres::Config) -> Result<tokio_postgres::Client> {
    let (client, conn) = cfg
        .connect(tokio_postgres::NoTls)
        .await
        .context("connecting to the demo cluster")?;
    tokio::spawn(conn);
    Ok(client)
}

pub(crate) async fn run(args: DemoArgs) -> Result<()> {
    say!("tenancy-demo: starting a private PostgreSQL cluster (embedded default)…");
    let cluster = Cluster::start(ClusterOptions {
        ephemeral: true,
        ..Default::default()
    })
    .await
    .context("starting the embedded PostgreSQL cluster")?;
    say!(
        "  PostgreSQL {} in {}",
        cluster.major_version(),
        cluster.data_dir().display()
    );
    let result = demo(&cluster, &args).await;
    cluster.stop().await;
    result
}

async fn demo(cluster: &Cluster, args: &DemoArgs) -> Result<()> {
    let db = "tenancy";
    let admin = cluster.connect("postgres").await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .context("creating the demo database")?;
    let su = cluster.connect(db).await?;
    bootstrap::bootstrap_cluster(&su).await?;
    bootstrap::bootstrap_database(&su, db).await?;
    let key = ContextKey::from_bytes("demo".parse()?, rand::random());
    // For `--check`: the probe signs contexts for synthetic tenants with the same key.
    let key_spec = format!("{}:{}", key.kid(), key.material_hex());
    let mut owner = connect(cluster.config_as(OWNER_ROLE, db)).await?;
    bootstrap::install_runtime(&owner, &key).await?;
    tenancy_audit::install(&owner).await?;
    tenancy_catalog::migrate(&mut owner).await?;
    owner
        .batch_execute(APP_SCHEMA)
        .await
        .context("creating the demo app's tables")?;
    say!("  roles: {OWNER_ROLE} (runs migrations, owns tables), {RUNTIME_ROLE} (runtime: NOSUPERUSER NOBYPASSRLS, owns nothing), {WORKER_ROLE} (job workers: only claims and finishes jobs)");
    say!(
        "  catalog migrated; tenant table `invoices`: RLS enabled + forced, signed-context policy"
    );
    say!(
        "  signed tenant context: {}",
        bootstrap::describe_context_impl(&owner).await?
    );

    let region = "eu-west".parse()?;
    tenancy_catalog::add_region(&owner, &region, "Europe (West)").await?;
    tenancy_catalog::add_cluster(
        &owner,
        &NewCluster {
            name: "pg-eu-west-1".into(),
            region: region.clone(),
            location: tenancy_catalog::ClusterLocation {
                host: cluster.socket_dir().display().to_string(),
                port: cluster.port(),
                dbname: db.into(),
            },
            capacity: 1000,
        },
    )
    .await?;
    let mut tenants = Vec::new();
    for (slug, name) in [("acme", "Acme Corp"), ("globex", "Globex Inc")] {
        let t = tenancy_catalog::create_tenant(
            &mut owner,
            &NewTenant {
                id: None,
                slug: slug.parse()?,
                display_name: name.into(),
                plan: "pro".parse()?,
                region: region.clone(),
                placement: Placement::Pooled,
            },
            "demo",
        )
        .await?;
        tenancy_catalog::set_state(&mut owner, t.id, TenantState::Active, "demo", "demo signup")
            .await?;
        say!(
            "  tenant {:<7} id {}  region {}  placement {}  → active",
            t.slug,
            t.id,
            t.region,
            t.placement
        );
        tenants.push(t);
    }

    let router = Router::new(
        cluster.config_as(RUNTIME_ROLE, db),
        key.clone(),
        ClusterCredentials {
            user: RUNTIME_ROLE.into(),
            password: None,
        },
        RouterOptions::default(),
    )?;
    for (t, n) in tenants.iter().zip([3, 2]) {
        let mut tx = router.begin(t.id).await?;
        for i in 1..=n {
            tx.execute(
                "INSERT INTO invoices (number, amount_cents) VALUES ($1, $2)",
                &[
                    &format!("{}-{i:04}", t.slug.as_str().to_uppercase()),
                    &(i as i64 * 12_500),
                ],
            )
            .await?;
        }
        tx.commit().await?;
    }
    say!();
    let mut first_ids: Vec<uuid::Uuid> = Vec::new();
    for t in &tenants {
        let mut tx = router.begin(t.id).await?;
        let rows = tx
            .query(
                "SELECT id, number, amount_cents FROM invoices ORDER BY number",
                &[],
            )
            .await?;
        tx.commit().await?;
        let numbers: Vec<String> = rows.iter().map(|r| r.get::<_, String>(1)).collect();
        say!(
            "  {} sees {} invoices: {}",
            t.slug,
            rows.len(),
            numbers.join(", ")
        );
        if let Some(r) = rows.first() {
            first_ids.push(r.get(0));
        }
    }
    let (acme, globex) = (&tenants[0], &tenants[1]);
    say!();
    say!("  {} tries to reach {}'s data:", acme.slug, globex.slug);
    let mut tx = router.begin(acme.id).await?;
    let by_id = tx
        .query_opt(
            "SELECT number FROM invoices WHERE id = $1",
            &[&first_ids[1]],
        )
        .await?;
    say!(
        "    SELECT … WHERE id = <globex invoice id>          → {}",
        if by_id.is_some() {
            "FOUND (isolation broken!)"
        } else {
            "no row"
        }
    );
    let updated = tx
        .execute(
            "UPDATE invoices SET amount_cents = 0 WHERE id = $1",
            &[&first_ids[1]],
        )
        .await?;
    say!("    UPDATE … WHERE id = <globex invoice id>          → {updated} rows");
    tx.query_one(
        "SELECT set_config('tenancy.ctx', $1, true)",
        &[&globex.id.to_string()],
    )
    .await?;
    let after_forge: i64 = tx
        .query_one(
            "SELECT count(*) FROM invoices WHERE tenant_id = $1",
            &[&globex.id.as_uuid()],
        )
        .await?
        .get(0);
    say!("    set_config('tenancy.ctx', '<globex id>', true)   → then sees {after_forge} of globex's rows (a setting is not a context)");
    tx.rollback().await?;
    let mut tx = router.begin(acme.id).await?;
    let moved = tx
        .execute(
            "UPDATE invoices SET tenant_id = $1",
            &[&globex.id.as_uuid()],
        )
        .await;
    say!(
        "    UPDATE invoices SET tenant_id = '<globex id>'     → {}",
        match &moved {
            Ok(n) => format!("{n} rows moved (isolation broken!)"),
            Err(_) => "refused by the policy's WITH CHECK".into(),
        }
    );
    drop(tx);
    let app = connect(cluster.config_as(RUNTIME_ROLE, db)).await?;
    let no_ctx: i64 = app
        .query_one("SELECT count(*) FROM invoices", &[])
        .await?
        .get(0);
    say!(
        "    runtime role with no tenant context               → sees {no_ctx} rows (fail closed)"
    );
    if by_id.is_some() || updated != 0 || after_forge != 0 || moved.is_ok() || no_ctx != 0 {
        bail!("isolation check failed in the demo");
    }
    let other = TenantId::new_random();
    match router.begin(other).await {
        Err(e) => say!("    unknown tenant {other}  → {e}"),
        Ok(_) => bail!("an unknown tenant was opened"),
    }
    say!();
    let app = example_app(cluster, db, &mut owner, key, &tenants, args).await?;
    if args.check {
        say!();
        say!("tenancy check --probe on the demo database:");
        let check = tenancy_check::CheckArgs {
            database_url: cluster.url_as(cluster.superuser(), db),
            runtime_role: Some(RUNTIME_ROLE.into()),
            tenant_columns: vec!["tenant_id".into()],
            global_tables: Vec::new(),
            format: tenancy_check::Format::Text,
            probe: true,
            context_guc: None,
            context_key: Some(key_spec.clone()),
        };
        let mut out = std::io::stdout();
        let code = tenancy_check::run(&check, &mut out).await;
        if code != 0 {
            app.stop().await;
            bail!("tenancy check reported an isolation error on the demo database (exit {code})");
        }
    }
    say!();
    say!("demo finished: each tenant saw only its own rows.");
    if args.keep_running {
        app.print_howto();
        say!();
        say!("cluster kept running; connect with:");
        say!(
            "  psql \"{}\"   (runtime role; sees nothing without a tenant context)",
            cluster.url_as(RUNTIME_ROLE, db)
        );
        say!(
            "  psql \"{}\"   (superuser)",
            cluster.url_as(cluster.superuser(), db)
        );
        say!("press Ctrl-C to stop and remove it");
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
    }
    app.stop().await;
    Ok(())
}

/// The example app (examples/invoicing) served on 127.0.0.1 next to the demo cluster.
struct ExampleApp {
    /// Where it listens.
    base: String,
    /// Ready-made tokens, per tenant slug.
    tokens: Vec<(String, String)>,
    /// An API key of the first tenant.
    api_key: String,
    /// Stops the server.
    stop: tokio::sync::oneshot::Sender<()>,
    /// The server task.
    task: tokio::task::JoinHandle<Result<()>>,
}

impl ExampleApp {
    fn print_howto(&self) {
        say!();
        say!(
            "example app (examples/invoicing) serving on {}; call it as either tenant:",
            self.base
        );
        for (slug, token) in &self.tokens {
            say!();
            say!("  # as {slug} (JWT, valid 12 h)");
            say!("  export TOKEN_{}={token}", slug.to_uppercase());
            say!(
                "  curl -s {}/invoices -H \"Authorization: Bearer $TOKEN_{}\"",
                self.base,
                slug.to_uppercase()
            );
            say!(
                "  curl -s {}/reports/summary -H \"Authorization: Bearer $TOKEN_{}\"",
                self.base,
                slug.to_uppercase()
            );
            say!(
                "  curl -s {}/me -H 'Host: {slug}.{BASE_DOMAIN}' -H \"Authorization: Bearer $TOKEN_{}\"   # subdomain selects, the token authenticates",
                self.base,
                slug.to_uppercase()
            );
            say!(
                "  curl -s {}/t/{slug}/me -H \"Authorization: Bearer $TOKEN_{}\"   # path prefix selects, the token authenticates",
                self.base,
                slug.to_uppercase()
            );
        }
        say!();
        say!(
            "  # {} API key (scopes invoices:read, invoices:write)",
            self.tokens.first().map(|t| t.0.as_str()).unwrap_or("")
        );
        say!(
            "  curl -s {}/customers -H 'X-Api-Key: {}'",
            self.base,
            self.api_key
        );
        say!("  curl -s -X POST {}/customers -H \"Authorization: Bearer $TOKEN_ACME\" -H 'content-type: application/json' -d '{{\"name\":\"Wile E.\",\"email\":\"wile@acme.example\"}}'", self.base);
        say!("  curl -s -X POST {}/invoices/<invoice id>/send -H \"Authorization: Bearer $TOKEN_ACME\"   # background job", self.base);
        say!();
        say!("  # without a credential every route but /health is 401, whatever tenant the host or path names");
        say!("  curl -s {}/t/globex/customers", self.base);
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(Err(e)) => eprintln!("example app: {e:#}"),
            Err(e) => eprintln!("example app task: {e}"),
            Ok(Ok(())) => {}
        }
    }
}

/// Base domain of the example app's subdomain source.
const BASE_DOMAIN: &str = "invoicing.localhost";

/// Sends one HTTP/1.1 request with a bearer token and returns the status and body.
async fn http(
    base: &str,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&serde_json::Value>,
) -> Result<(u16, serde_json::Value)> {
    http_as(base, method, path, None, Some(token), body).await
}

/// Sends one HTTP/1.1 request (with `host` as the Host header if given, else the
/// address; with a bearer token if given) and returns the status and body.
async fn http_as(
    base: &str,
    method: &str,
    path: &str,
    host: Option<&str>,
    token: Option<&str>,
    body: Option<&serde_json::Value>,
) -> Result<(u16, serde_json::Value)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .context("connecting to the example app")?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        host.unwrap_or(addr),
        body.len()
    );
    s.write_all(req.as_bytes())
        .await
        .context("sending a request")?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .await
        .context("reading a response")?;
    let text = String::from_utf8_lossy(&out);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("malformed HTTP response")?;
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    // Bodies are small; undo chunked encoding if the server used it.
    let json_text = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut acc = String::new();
        let mut r = rest;
        while let Some((len, tail)) = r.split_once("\r\n") {
            let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
            if n == 0 || tail.len() < n {
                break;
            }
            acc.push_str(&tail[..n]);
            r = tail[n..].trim_start_matches("\r\n");
        }
        acc
    } else {
        rest.to_owned()
    };
    let v = serde_json::from_str(&json_text).unwrap_or(serde_json::Value::Null);
    Ok((status, v))
}

async fn example_app(
    cluster: &Cluster,
    db: &str,
    owner: &mut tokio_postgres::Client,
    key: ContextKey,
    tenants: &[tenancy_catalog::Tenant],
    args: &DemoArgs,
) -> Result<ExampleApp> {
    use serde_json::json;
    use tenancy_axum::jwt::{JwtConfig, TenantClaim};
    use tenancy_axum::Source;

    invoicing::migrate(owner)
        .await
        .context("migrating the example app")?;
    let dev = invoicing::DevIssuer {
        issuer: "tenancy-demo".into(),
        audience: "invoicing".into(),
        secret: hex_secret(),
    };
    let app = invoicing::build(invoicing::Config {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], args.port)),
        catalog: cluster.config_as(RUNTIME_ROLE, db).into(),
        queue_db: cluster.config_as(WORKER_ROLE, db).into(),
        credentials: ClusterCredentials {
            user: RUNTIME_ROLE.into(),
            password: None,
        },
        context_key: key,
        job_key: rand::random(),
        sources: vec![
            Source::jwt(
                JwtConfig::new(TenantClaim::Id("tenant_id".into())).issuer(dev.jwt_issuer()?),
            ),
            Source::subdomain(BASE_DOMAIN),
            Source::api_key(),
            Source::path_prefix("/t"),
        ],
        run_worker: true,
        pooler: tenancy_sdk::Pooler::Direct,
        access: invoicing::AccessConfig {
            role_claims: vec![dev.role_claims()],
        },
    })
    .await
    .context("starting the example app")?;
    let base = format!("http://127.0.0.1:{}", app.port());
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    say!(
        "  example app (examples/invoicing) on {base} — the control plane's API is `tenancy serve`"
    );
    let mut tokens = Vec::new();
    let mut first_invoice = Vec::new();
    for (t, (customer, lines)) in tenants.iter().zip([
        (
            "Road Runner Ltd",
            vec![("Anvil", 2, 19_900), ("Rocket skates", 1, 49_900)],
        ),
        ("Hank Scorpio", vec![("Doomsday device", 1, 999_900)]),
    ]) {
        let token = dev.token(
            t.id,
            &format!("demo-user@{}", t.slug),
            invoicing::SCOPES,
            std::time::Duration::from_secs(12 * 3600),
        )?;
        let slug = t.slug.as_str();
        let (_, c) = http(
            &base,
            "POST",
            "/customers",
            &token,
            Some(&json!({"name": customer, "email": format!("billing@{slug}.example")})),
        )
        .await?;
        let lines: Vec<_> = lines
            .iter()
            .map(|(d, q, p)| json!({"description": d, "quantity": q, "unit_price_cents": p}))
            .collect();
        let (status, inv) = http(&base, "POST", "/invoices", &token, Some(&json!({"customer_id": c["id"], "number": format!("{}-INV-1", slug.to_uppercase()), "lines": lines}))).await?;
        if status != 201 {
            bail!("the example app refused to create an invoice for {slug}: {status} {inv}");
        }
        first_invoice.push(inv["id"].as_str().unwrap_or_default().to_owned());
        let (_, _) = http(
            &base,
            "POST",
            &format!("/invoices/{}/send", inv["id"].as_str().unwrap_or_default()),
            &token,
            None,
        )
        .await?;
        tokens.push((slug.to_owned(), token));
    }
    for (slug, token) in &tokens {
        let (status, r) = http(&base, "GET", "/reports/summary", token, None).await?;
        say!(
            "  GET /reports/summary as {slug:<7} → {status}  customers {}  invoices {}  total {:.2}",
            r["customers"], r["invoices"], r["total_cents"].as_i64().unwrap_or(0) as f64 / 100.0
        );
    }
    let (status, r) = http(
        &base,
        "GET",
        &format!("/invoices/{}", first_invoice[1]),
        &tokens[0].1,
        None,
    )
    .await?;
    say!(
        "  GET /invoices/<globex invoice id> as acme → {status} {}",
        r["code"].as_str().unwrap_or("")
    );
    if status != 404 {
        bail!("acme reached globex's invoice through the example app");
    }
    // Naming a tenant is not a credential: without a token every route is refused,
    // whichever tenant the path or the host names; with acme's token, naming globex is a
    // mismatch.
    let globex = tenants[1].slug.as_str();
    let globex_host = format!("{globex}.{BASE_DOMAIN}");
    let customers = format!("/t/{globex}/customers");
    let one = format!("/t/{globex}/invoices/{}", first_invoice[1]);
    let new_customer = json!({"name": "Mallory", "email": "mallory@evil.example"});
    for (method, path, host, token, body, want) in [
        ("GET", customers.as_str(), None, None, None, 401),
        (
            "POST",
            customers.as_str(),
            None,
            None,
            Some(&new_customer),
            401,
        ),
        (
            "PATCH",
            one.as_str(),
            None,
            None,
            Some(&json!({"status": "void"})),
            401,
        ),
        ("DELETE", one.as_str(), None, None, None, 401),
        (
            "GET",
            "/customers",
            Some(globex_host.as_str()),
            None,
            None,
            401,
        ),
        (
            "GET",
            customers.as_str(),
            None,
            Some(tokens[0].1.as_str()),
            None,
            403,
        ),
        (
            "GET",
            "/customers",
            Some(globex_host.as_str()),
            Some(tokens[0].1.as_str()),
            None,
            403,
        ),
    ] {
        let (status, r) = http_as(&base, method, path, host, token, body).await?;
        let who = if token.is_some() {
            "acme's token"
        } else {
            "no credential"
        };
        let via = host.map(|h| format!(" Host: {h}")).unwrap_or_default();
        say!(
            "  {method:<6} {path}{via} with {who} → {status} {}",
            r["code"].as_str().unwrap_or("")
        );
        if status != want {
            bail!("{method} {path}{via} with {who} answered {status}, not {want}");
        }
    }
    // Wait for the "send invoice" jobs to run in their tenants.
    let mut sent = 0;
    for _ in 0..100 {
        sent = 0;
        for ((_, token), inv) in tokens.iter().zip(&first_invoice) {
            let (_, r) = http(&base, "GET", &format!("/invoices/{inv}"), token, None).await?;
            if r["sent"] == json!(true) {
                sent += 1;
            }
        }
        if sent == tokens.len() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    say!(
        "  background job send_invoice ran for {sent} of {} tenants, each in its own tenant scope",
        tokens.len()
    );
    let (_, api_key) = tenancy_axum::api_key::issue_api_key(
        owner,
        tenants[0].id,
        "demo",
        &["invoices:read".into(), "invoices:write".into()],
    )
    .await?;
    Ok(ExampleApp {
        base,
        tokens,
        api_key: api_key.expose().to_owned(),
        stop,
        task,
    })
}

fn hex_secret() -> Vec<u8> {
    let b: [u8; 32] = rand::random();
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<String>()
        .into_bytes()
}
