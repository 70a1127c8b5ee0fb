//! `tenancy tenants export|import`: one tenant's rows into an archive file and back, from
//! any placement to any placement (`tenancy_transfer` does the work; this module finds
//! the tenant, creates the target of an import, and draws the progress bar).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use secrecy::{ExposeSecret, SecretString};
use tenancy_catalog::{NewTenant, WorkflowKind};
use tenancy_core::{ContextKey, KeyId, TenantId, TenantState};
use tenancy_sdk::bootstrap::{OWNER_ROLE, RUNTIME_ROLE};
use tenancy_sdk::{ClusterAccess, ClusterCredentials, Login, PgConfig, Router, RouterOptions};

/// Arguments of `tenancy tenants export`.
#[derive(clap::Args, Debug)]
pub(crate) struct ExportArgs {
    /// The tenant (id or slug).
    tenant: String,
    /// The archive to write; refused if it exists. Written as FILE.partial and renamed
    /// when complete, so a failed export leaves no archive.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    access: Access,
}

/// Arguments of `tenancy tenants import`.
#[derive(clap::Args, Debug)]
pub(crate) struct ImportArgs {
    /// The archive (written by `tenancy tenants export`).
    file: PathBuf,
    /// The tenant to import into: an existing, active tenant without rows (id or slug),
    /// or the slug of a new tenant to create for the import. Default: the archive's slug.
    #[arg(long)]
    tenant: Option<String>,
    /// Placement of a new tenant (pooled, schema, dedicated). Default: the archive's.
    #[arg(long)]
    placement: Option<String>,
    /// Region of a new tenant. Default: the archive's.
    #[arg(long)]
    region: Option<String>,
    /// Plan of a new tenant.
    #[arg(long, default_value = "free")]
    plan: String,
    /// How long to wait for the workers of `tenancy serve` to provision a new tenant.
    #[arg(long, default_value_t = 120)]
    wait_secs: u64,
    #[command(flatten)]
    access: Access,
}

/// How to reach tenant data: the tenant's own transactions need the context key and the
/// runtime role's login; raising sequences after an import needs the owner's.
#[derive(clap::Args, Debug)]
pub(crate) struct Access {
    /// Id of the context key (context_key_id of `tenancy serve`).
    #[arg(long, env = "TENANCY_CONTEXT_KEY_ID", default_value = "k1")]
    context_key_id: String,
    /// The context key (64 hex digits; context_key_hex of `tenancy serve`).
    #[arg(long, env = "TENANCY_CONTEXT_KEY_HEX", hide_env_values = true)]
    context_key_hex: Option<SecretString>,
    /// Password of the runtime role (tenancy_app) on the catalog and tenant clusters.
    #[arg(long, env = "TENANCY_RUNTIME_PASSWORD", hide_env_values = true)]
    runtime_password: Option<SecretString>,
    /// Password of the owner role (tenancy_owner) on tenant clusters. Default: the
    /// catalog URL's password.
    #[arg(long, env = "TENANCY_OWNER_PASSWORD", hide_env_values = true)]
    owner_password: Option<SecretString>,
}

/// The router (runtime role) and cluster logins built from the catalog URL and `access`.
pub(crate) fn open(catalog: &PgConfig, access: &Access) -> Result<(Router, ClusterAccess)> {
    let kid: KeyId = access
        .context_key_id
        .parse()
        .with_context(|| format!("--context-key-id {:?}", access.context_key_id))?;
    let hex = access.context_key_hex.as_ref().context(
        "no context key: pass --context-key-hex or set TENANCY_CONTEXT_KEY_HEX (the context_key_hex of tenancy serve)",
    )?;
    let key = ContextKey::from_hex(kid, hex.expose_secret()).context("the context key")?;
    let mut runtime = catalog.clone();
    runtime.pg_mut().user(RUNTIME_ROLE);
    if let Some(p) = &access.runtime_password {
        runtime.pg_mut().password(p.expose_secret().as_bytes());
    }
    let router = Router::new(
        runtime,
        key,
        ClusterCredentials {
            user: RUNTIME_ROLE.into(),
            password: access
                .runtime_password
                .as_ref()
                .map(|p| p.expose_secret().to_owned()),
        },
        RouterOptions {
            cluster_tls: catalog.tls().clone(),
            // An export or import is one transaction as long as the tenant is large: no
            // pool deadline and no statement timeout.
            pool: tenancy_sdk::PoolOptions {
                transaction_deadline: Duration::ZERO,
                statement_timeout: Duration::ZERO,
                ..Default::default()
            },
            ..RouterOptions::default()
        },
    )
    .context("the tenant router")?;
    let owner_password = access.owner_password.clone().or_else(|| {
        catalog
            .pg()
            .get_password()
            .map(|p| SecretString::from(String::from_utf8_lossy(p).into_owned()))
    });
    let logins = ClusterAccess {
        // Not used: an import creates no database itself (provisioning does).
        admin: Login::trusted("postgres"),
        owner: Login {
            user: OWNER_ROLE.into(),
            password: owner_password,
        },
        runtime: Login {
            user: RUNTIME_ROLE.into(),
            password: access.runtime_password.clone(),
        },
        tls: catalog.tls().clone(),
    };
    Ok((router, logins))
}

/// A progress bar on stderr when it is a terminal (indicatif draws nothing otherwise).
pub(crate) struct Bar(indicatif::ProgressBar);

impl Bar {
    fn bytes(total: u64, what: &str) -> Self {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:30}] {bytes}/{total_bytes} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(what.to_owned());
        Bar(bar)
    }

    pub(crate) fn rows(what: &str) -> Self {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{prefix} {spinner} {pos} rows {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.set_prefix(what.to_owned());
        bar.enable_steady_tick(Duration::from_millis(120));
        Bar(bar)
    }
}

impl tenancy_transfer::Progress for Bar {
    fn table(&self, name: &str) {
        self.0.set_message(name.to_owned());
    }
    fn rows(&self, n: u64) {
        if self.0.length().is_none() {
            self.0.inc(n);
        }
    }
    fn bytes(&self, offset: u64) {
        if self.0.length().is_some() {
            self.0.set_position(offset);
        }
    }
    fn verifying(&self) {
        self.0.set_message("verifying and committing");
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

async fn resolve(client: &tokio_postgres::Client, t: &str) -> Result<Option<TenantId>> {
    if let Ok(id) = t.parse::<TenantId>() {
        return Ok(Some(id));
    }
    let slug = t
        .parse()
        .with_context(|| format!("{t:?} is neither a tenant id nor a slug"))?;
    match tenancy_catalog::get_tenant_by_slug(client, &slug).await {
        Ok(t) => Ok(Some(t.id)),
        Err(tenancy_catalog::CatalogError::TenantNotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `tenancy tenants export`.
pub(crate) async fn export(
    cfg: &PgConfig,
    catalog: &mut tokio_postgres::Client,
    args: ExportArgs,
) -> Result<String> {
    let (router, logins) = open(cfg, &args.access)?;
    let id = resolve(catalog, &args.tenant)
        .await?
        .with_context(|| format!("no tenant has the slug {:?}", args.tenant))?;
    if args.out.exists() {
        bail!(
            "--out {}: the file exists; remove it or choose another name",
            args.out.display()
        );
    }
    let partial = partial_path(&args.out);
    let file = tokio::fs::File::create(&partial)
        .await
        .with_context(|| format!("creating {}", partial.display()))?;
    let mut out = tokio::io::BufWriter::with_capacity(64 << 10, file);
    let bar = Bar::rows("exporting");
    let r = export_recorded(&router, &logins, catalog, id, &mut out, &bar, &partial).await;
    drop(bar);
    let summary = match r {
        Ok(s) => s,
        Err(e) => {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e);
        }
    };
    tokio::fs::rename(&partial, &args.out)
        .await
        .with_context(|| format!("renaming {} to {}", partial.display(), args.out.display()))?;
    Ok(format!("{summary}written to {}", args.out.display()))
}

/// Writes the archive of tenant `id` to `out`, syncs it, and records the export as
/// `tenant.export` in the control log (the catalog) and in the tenant's own audit log
/// (creating the audit table there as the owner role if it has none yet), as an export
/// through the control plane's API is recorded; the actor is the operator (`cli:$USER`).
/// The archive is renamed into place only once the export is recorded.
async fn export_recorded(
    router: &Router,
    logins: &ClusterAccess,
    catalog: &mut tokio_postgres::Client,
    id: TenantId,
    out: &mut tokio::io::BufWriter<tokio::fs::File>,
    bar: &Bar,
    partial: &Path,
) -> Result<tenancy_transfer::ExportSummary> {
    let plan = tenancy_transfer::ExportPlan::read(catalog, id)
        .await
        .with_context(|| format!("reading tenant {id}"))?;
    let owner = tenancy_transfer::owner_connection(catalog, logins, plan.tenant())
        .await
        .context("connecting to the tenant's database as the owner (to record the export in its audit log)")?;
    tenancy_control::transfer::ensure_audit_table(&owner)
        .await
        .context("the tenant's audit table")?;
    drop(owner);
    let summary = tenancy_transfer::export_planned(router, plan, &mut *out, bar)
        .await
        .with_context(|| format!("exporting tenant {id}"))?;
    out.get_ref()
        .sync_all()
        .await
        .with_context(|| format!("writing {}", partial.display()))?;
    let facts = tenancy_control::transfer::ExportFacts::new(uuid::Uuid::new_v4(), "cli", &summary);
    let who = crate::audit::operator(None);
    tenancy_control::transfer::record_export(catalog, router, id, &who, &facts)
        .await
        .context("recording the export in the audit logs")?;
    Ok(summary)
}

fn partial_path(out: &Path) -> PathBuf {
    let mut p = out.as_os_str().to_owned();
    p.push(".partial");
    PathBuf::from(p)
}

/// `tenancy tenants import`.
pub(crate) async fn import(
    cfg: &PgConfig,
    catalog: &mut tokio_postgres::Client,
    args: ImportArgs,
) -> Result<String> {
    let (router, logins) = open(cfg, &args.access)?;
    let open_file = || async {
        let f = tokio::fs::File::open(&args.file)
            .await
            .with_context(|| format!("opening {}", args.file.display()))?;
        let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
        anyhow::Ok((tokio::io::BufReader::with_capacity(64 << 10, f), len))
    };
    // The whole archive is checked before anything is created.
    let (file, len) = open_file().await?;
    let bar = Bar::bytes(len, "checking ");
    let verified = tenancy_transfer::verify_archive(file, &bar)
        .await
        .with_context(|| format!("checking {}", args.file.display()))?;
    drop(bar);
    let source = &verified.header.source;
    let wanted = args.tenant.clone().unwrap_or_else(|| source.slug.clone());
    let (id, created) = match resolve(catalog, &wanted).await? {
        Some(id) => {
            let t = tenancy_catalog::get_tenant(catalog, id).await?;
            if t.state != TenantState::Active {
                bail!(
                    "tenant {} is {}: import into an active tenant, or pass --tenant with a new slug",
                    t.slug,
                    t.state
                );
            }
            (id, false)
        }
        None => (
            create(catalog, &args, &verified.header, &wanted).await?,
            true,
        ),
    };
    let (file, len) = open_file().await?;
    let bar = Bar::bytes(len, "importing");
    let r = tenancy_transfer::import(&router, catalog, &logins, id, file, &bar).await;
    drop(bar);
    match r {
        Ok(summary) => Ok(format!("{summary}into tenant {wanted} ({id})")),
        Err(e) if created => {
            // The tenant was made for this import only: it goes too.
            let tx = catalog.transaction().await?;
            let wf = tenancy_catalog::enqueue_workflow(
                &tx,
                id,
                WorkflowKind::Delete,
                &serde_json::json!({"reason": "import failed"}),
                "cli",
            )
            .await?;
            tx.commit().await?;
            Err(anyhow::Error::new(e).context(format!(
                "importing into the new tenant {wanted} ({id}); nothing was imported and its deletion is queued (workflow {})",
                wf.id
            )))
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!(
            "importing into tenant {wanted} ({id}); nothing was imported"
        ))),
    }
}

/// Creates the import's target tenant and waits for `tenancy serve`'s workers to make it
/// active.
async fn create(
    catalog: &mut tokio_postgres::Client,
    args: &ImportArgs,
    header: &tenancy_transfer::Header,
    slug: &str,
) -> Result<TenantId> {
    let source = &header.source;
    let new = NewTenant {
        id: None,
        display_name: slug.to_owned(),
        slug: slug
            .parse()
            .with_context(|| format!("--tenant {slug:?} is not a valid slug"))?,
        plan: args.plan.parse().context("--plan")?,
        region: args
            .region
            .as_deref()
            .unwrap_or(&source.region)
            .parse()
            .context("--region")?,
        placement: args
            .placement
            .as_deref()
            .unwrap_or(&source.placement)
            .parse()
            .context("--placement")?,
    };
    let tx = catalog.transaction().await?;
    let (t, _) =
        tenancy_catalog::start_provisioning(&tx, &new, &serde_json::json!({}), "cli:import")
            .await
            .context("creating the target tenant")?;
    tx.commit().await?;
    wait_until_active(
        catalog,
        slug,
        t.id,
        args.wait_secs,
        &format!("run the import again with --tenant {slug}"),
    )
    .await
}

/// Waits until `tenancy serve`'s workers made the new tenant active, at most `wait_secs`.
/// Nothing was imported when it gives up; `rerun` says how to go on.
pub(crate) async fn wait_until_active(
    catalog: &tokio_postgres::Client,
    slug: &str,
    id: TenantId,
    wait_secs: u64,
    rerun: &str,
) -> Result<TenantId> {
    let deadline = Instant::now() + Duration::from_secs(wait_secs);
    loop {
        let now = tenancy_catalog::get_tenant(catalog, id).await?;
        match now.state {
            TenantState::Active => return Ok(id),
            TenantState::Provisioning if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            TenantState::Provisioning => bail!(
                "tenant {slug} ({id}) is still provisioning after {wait_secs} s: is `tenancy serve` running its workers? Nothing was imported; {rerun} once it is active"
            ),
            other => bail!("tenant {slug} ({id}) did not become active ({other}); nothing was imported"),
        }
    }
}
