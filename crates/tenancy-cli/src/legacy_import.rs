//! `tenancy import --from-database URL --tenant SLUG`: a database of the app's
//! single-tenant era imported as one tenant (`tenancy_transfer::legacy` does the work;
//! this module finds or creates the tenant, keeps the catalog's record of the source and
//! prints the report).

use anyhow::{bail, Context, Result};
use tenancy_catalog::NewTenant;
use tenancy_core::{Placement, TenantId, TenantState};
use tenancy_transfer::legacy::{self, LegacyOptions};

/// Arguments of `tenancy import`.
#[derive(clap::Args, Debug)]
pub(crate) struct ImportArgs {
    /// Catalog database URL (owner role).
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// The single-tenant database (a login that may read all its tables).
    #[arg(long)]
    from_database: String,
    /// Slug of the tenant to create for it. A source imported before (or started) keeps
    /// the tenant it was given then.
    #[arg(long)]
    tenant: String,
    /// Placement of the new tenant (pooled, schema, dedicated).
    #[arg(long, default_value = "pooled")]
    placement: String,
    /// Region of the new tenant. Default: the catalog's only region.
    #[arg(long)]
    region: Option<String>,
    /// Plan of the new tenant.
    #[arg(long, default_value = "free")]
    plan: String,
    /// Report every incompatibility with what to do, and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// The app's migration ledger table (`schema.table`, the same in the source and the
    /// deployment): the source must have applied exactly the deployment's migrations.
    #[arg(long)]
    ledger: Option<String>,
    /// A source table that is not the tenant's (`table` or `schema.table`); repeatable.
    #[arg(long)]
    exclude: Vec<String>,
    /// How long to wait for the workers of `tenancy serve` to provision the new tenant.
    #[arg(long, default_value_t = 120)]
    wait_secs: u64,
    #[command(flatten)]
    access: crate::transfer::Access,
}

/// Runs `tenancy import`. Exit 0: imported (or nothing to do, or a clean dry run);
/// 1: the source does not fit (the report says what to do); 2: could not run or failed.
pub(crate) async fn run(args: ImportArgs) -> u8 {
    match go(args).await {
        Ok((out, code)) => {
            use std::io::Write as _;
            let _ = writeln!(std::io::stdout(), "{out}");
            code
        }
        Err(e) => {
            eprintln!("error: {}", crate::error_text(&e));
            2
        }
    }
}

async fn go(args: ImportArgs) -> Result<(String, u8)> {
    let mut cfg =
        tenancy_conn::PgConfig::parse(&args.database_url).context("parsing DATABASE_URL")?;
    if cfg.pg().get_user().is_none() {
        cfg.pg_mut().user(tenancy_sdk::bootstrap::OWNER_ROLE);
    }
    let mut catalog = tenancy_conn::connect(&cfg)
        .await
        .context("connecting to the catalog")?;
    let source_cfg =
        tenancy_conn::PgConfig::parse(&args.from_database).context("parsing --from-database")?;
    let source = tenancy_conn::connect(&source_cfg)
        .await
        .context("connecting to the source database (--from-database)")?;
    let opts = LegacyOptions {
        ledger: args.ledger.clone(),
        exclude: args.exclude.clone(),
    };
    let identity = legacy::source_identity(&source).await?;
    let recorded = legacy::recorded(&catalog, &identity).await?;
    if let Some(r) = &recorded {
        if r.done && !args.dry_run {
            return Ok((
                format!(
                    "source {identity} was imported into tenant {} before; nothing to do",
                    r.tenant
                ),
                0,
            ));
        }
    }
    let (router, logins) = crate::transfer::open(&cfg, &args.access)?;
    // The app's tables as a pooled cluster holds them: the recorded tenant's cluster, or
    // the first cluster of the region.
    let cluster = match &recorded {
        Some(r) => {
            let t = tenancy_catalog::get_tenant(&catalog, r.tenant).await?;
            tenancy_catalog::get_cluster(&catalog, t.cluster_id).await?
        }
        None => {
            let region = region(&catalog, args.region.as_deref()).await?;
            tenancy_catalog::list_clusters(&catalog)
                .await?
                .into_iter()
                .filter(|c| c.region.to_string() == region)
                .min_by(|a, b| a.name.cmp(&b.name))
                .with_context(|| format!("region {region} has no cluster"))?
        }
    };
    let owner_cfg = tenancy_sdk::config_for(&cluster, &logins.owner, &cluster.dbname, &logins.tls);
    let owner = tenancy_conn::connect(&owner_cfg)
        .await
        .with_context(|| format!("connecting to cluster {} as the owner", cluster.name))?;
    let report = legacy::inspect(&source, &owner, &opts).await?;
    drop(owner);
    if args.dry_run {
        let verdict = if report.blocked() {
            "the import would be refused: fix the blockers above, then run it again"
        } else {
            "the import would proceed (dry run: nothing was changed)"
        };
        return Ok((
            format!("source {identity}\n{report}{verdict}"),
            u8::from(report.blocked()),
        ));
    }
    if report.blocked() {
        return Ok((
            format!("source {identity}\n{report}nothing was imported: fix the blockers above (run with --dry-run to check), then run it again"),
            1,
        ));
    }
    let tenant = match recorded {
        Some(r) => {
            let t = tenancy_catalog::get_tenant(&catalog, r.tenant).await?;
            if t.state != TenantState::Active {
                bail!(
                    "source {identity} was started into tenant {} ({}), which is {}: resume or delete it first",
                    t.slug,
                    t.id,
                    t.state
                );
            }
            t.id
        }
        None => create(&mut catalog, &args, &identity).await?,
    };
    let p = crate::transfer::Bar::rows("importing");
    let r = legacy::import_database(&router, &catalog, &logins, &source, tenant, &opts, &p).await;
    drop(p);
    match r {
        Ok(summary) => {
            legacy::finish(&catalog, &identity, &summary.tables).await?;
            Ok((format!("{report}{summary}"), 0))
        }
        Err(e @ tenancy_transfer::Error::Incompatible(_)) => Ok((
            format!("{e}\nthe tenant {tenant} stays recorded for this source and empty; run again once fixed"),
            1,
        )),
        Err(e) => Err(anyhow::Error::new(e).context(format!(
            "importing into tenant {tenant}; nothing was imported, run the same command again to retry (the tenant is reused)"
        ))),
    }
}

/// The region given, or the catalog's only one.
async fn region(catalog: &tokio_postgres::Client, given: Option<&str>) -> Result<String> {
    if let Some(r) = given {
        return Ok(r.to_owned());
    }
    let all = tenancy_catalog::list_regions(catalog).await?;
    match all.as_slice() {
        [one] => Ok(one.id.to_string()),
        [] => bail!("the catalog has no region: add one (and a cluster) first"),
        _ => bail!("the catalog has several regions: pass --region"),
    }
}

/// Creates the tenant and records the source in one catalog transaction, then waits for
/// the workers of `tenancy serve` to make it active.
async fn create(
    catalog: &mut tokio_postgres::Client,
    args: &ImportArgs,
    identity: &str,
) -> Result<TenantId> {
    let placement: Placement = args.placement.parse().context("--placement")?;
    let new = NewTenant {
        id: None,
        display_name: args.tenant.clone(),
        slug: args
            .tenant
            .parse()
            .with_context(|| format!("--tenant {:?} is not a valid slug", args.tenant))?,
        plan: args.plan.parse().context("--plan")?,
        region: region(catalog, args.region.as_deref())
            .await?
            .parse()
            .context("--region")?,
        placement,
    };
    let tx = catalog.transaction().await?;
    let (t, _) =
        tenancy_catalog::start_provisioning(&tx, &new, &serde_json::json!({}), "cli:import")
            .await
            .context("creating the tenant")?;
    legacy::record(&tx, identity, t.id).await?;
    tx.commit().await?;
    crate::transfer::wait_until_active(
        catalog,
        &args.tenant,
        t.id,
        args.wait_secs,
        "run the same command again",
    )
    .await
}
