//! `tenancy tenants …`: tenant lifecycle from the command line. Each command queues a
//! workflow in the catalog (the workers of `tenancy serve` run it) and prints the result.

use anyhow::Context;
use tenancy_catalog::{NewTenant, WorkflowKind};
use tenancy_core::TenantId;

/// Arguments of `tenancy tenants`.
#[derive(clap::Args, Debug)]
pub(crate) struct TenantsArgs {
    /// Catalog database URL (owner role).
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    #[command(subcommand)]
    pub command: TenantsCommand,
}

/// Tenant subcommands.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum TenantsCommand {
    /// Create a tenant and queue its provisioning.
    Create {
        slug: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value = "free")]
        plan: String,
        #[arg(long)]
        region: String,
        #[arg(long, default_value = "pooled")]
        placement: String,
    },
    /// List tenants.
    List {
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        after: Option<String>,
    },
    /// Show a tenant (id or slug) with its workflows.
    Show { tenant: String },
    /// Suspend a tenant.
    Suspend {
        tenant: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Resume a suspended tenant.
    Resume { tenant: String },
    /// Soft-delete a tenant (purged after the retention period unless on legal hold).
    Delete {
        tenant: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Move a tenant online to another placement, cluster or region (a workflow the
    /// workers of `tenancy serve` run: copy, catch-up, verified cutover). A region
    /// outside the tenant's residency policy is refused before anything is copied.
    Move {
        tenant: String,
        /// pooled, schema or dedicated.
        #[arg(long)]
        to: String,
        /// The target cluster's name (default: the tenant's, or one of the new region).
        #[arg(long)]
        cluster: Option<String>,
        /// The target region (default: the cluster's, else the tenant's).
        #[arg(long)]
        region: Option<String>,
    },
    /// Set (--regions) or clear (--clear) a tenant's residency policy: the registered
    /// regions its data may live in, its current region among them. Moves to a region
    /// outside it are refused. Recorded in the control-plane audit log.
    Residency {
        tenant: String,
        /// Comma-separated region ids (1 to 64, no duplicates).
        #[arg(
            long,
            value_delimiter = ',',
            required_unless_present = "clear",
            conflicts_with = "clear"
        )]
        regions: Vec<String>,
        /// Remove the policy (the tenant's current region only).
        #[arg(long)]
        clear: bool,
    },
    /// Write every row of a tenant's tables to an archive (any placement), read through
    /// the tenant's own transaction.
    Export(crate::transfer::ExportArgs),
    /// Load an archive into an empty tenant of any placement (created when --tenant names
    /// none), verified by counts and checksums, all or nothing.
    Import(crate::transfer::ImportArgs),
}

async fn resolve(client: &tokio_postgres::Client, t: &str) -> anyhow::Result<TenantId> {
    if let Ok(id) = t.parse::<TenantId>() {
        return Ok(id);
    }
    let slug = t.parse().context("parsing the tenant (id or slug)")?;
    Ok(tenancy_catalog::get_tenant_by_slug(client, &slug).await?.id)
}

async fn enqueue(
    client: &mut tokio_postgres::Client,
    id: TenantId,
    kind: WorkflowKind,
    input: serde_json::Value,
) -> anyhow::Result<String> {
    let tx = client.transaction().await?;
    let wf = tenancy_catalog::enqueue_workflow(&tx, id, kind, &input, "cli").await?;
    tx.commit().await?;
    Ok(format!(
        "queued {} workflow {} for tenant {id}",
        wf.kind, wf.id
    ))
}

/// Runs a tenants subcommand; returns what to print.
pub(crate) async fn run(args: TenantsArgs) -> anyhow::Result<String> {
    let cfg = tenancy_conn::PgConfig::parse(&args.database_url).context("parsing DATABASE_URL")?;
    let mut client = tenancy_conn::connect(&cfg)
        .await
        .context("connecting to the catalog")?;
    match args.command {
        TenantsCommand::Create {
            slug,
            name,
            plan,
            region,
            placement,
        } => {
            let new = NewTenant {
                id: None,
                display_name: name.unwrap_or_else(|| slug.clone()),
                slug: slug.parse()?,
                plan: plan.parse()?,
                region: region.parse()?,
                placement: placement.parse()?,
            };
            let tx = client.transaction().await?;
            let (t, wf) =
                tenancy_catalog::start_provisioning(&tx, &new, &serde_json::json!({}), "cli")
                    .await?;
            tx.commit().await?;
            Ok(format!(
                "tenant {} ({}) created; provisioning workflow {}",
                t.slug, t.id, wf.id
            ))
        }
        TenantsCommand::List { limit, after } => {
            let after = after.map(|a| a.parse()).transpose()?;
            let ts = tenancy_catalog::list_tenants(&client, after.as_ref(), limit).await?;
            Ok(ts
                .iter()
                .map(|t| {
                    format!(
                        "{}\t{}\t{}\t{}\t{}\t{}",
                        t.id, t.slug, t.state, t.placement, t.region, t.plan
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"))
        }
        TenantsCommand::Show { tenant } => {
            let id = resolve(&client, &tenant).await?;
            let t = tenancy_catalog::get_tenant(&client, id).await?;
            let wfs = tenancy_catalog::tenant_workflows(&client, id).await?;
            let mut out = format!(
                "{} {} state={} placement={} region={} plan={}",
                t.id, t.slug, t.state, t.placement, t.region, t.plan
            );
            for w in wfs {
                out.push_str(&format!(
                    "\n  workflow {} {} {} step={}",
                    w.id, w.kind, w.status, w.step
                ));
            }
            Ok(out)
        }
        TenantsCommand::Suspend { tenant, reason } => {
            let id = resolve(&client, &tenant).await?;
            enqueue(
                &mut client,
                id,
                WorkflowKind::Suspend,
                serde_json::json!({"reason": reason}),
            )
            .await
        }
        TenantsCommand::Resume { tenant } => {
            let id = resolve(&client, &tenant).await?;
            enqueue(&mut client, id, WorkflowKind::Resume, serde_json::json!({})).await
        }
        TenantsCommand::Delete { tenant, reason } => {
            let id = resolve(&client, &tenant).await?;
            enqueue(
                &mut client,
                id,
                WorkflowKind::Delete,
                serde_json::json!({"reason": reason}),
            )
            .await
        }
        TenantsCommand::Move {
            tenant,
            to,
            cluster,
            region,
        } => {
            let req =
                tenancy_provision::MoveRequest::parse(&to, cluster.as_deref(), region.as_deref())
                    .context("checking the move")?;
            let id = resolve(&client, &tenant).await?;
            enqueue(&mut client, id, WorkflowKind::Move, req.input()).await
        }
        TenantsCommand::Residency {
            tenant,
            regions,
            clear,
        } => {
            let id = resolve(&client, &tenant).await?;
            let who = crate::audit::operator(None);
            let wanted = (!clear).then_some(regions.as_slice());
            let t = tenancy_control::api::set_tenant_residency(&mut client, id, wanted, &who)
                .await
                .map_err(|e| anyhow::anyhow!("{}", e.detail))?;
            Ok(match &t.residency {
                Some(rs) => format!(
                    "tenant {}: residency {}",
                    t.id,
                    rs.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
                ),
                None => format!(
                    "tenant {}: residency cleared (region {} only)",
                    t.id, t.region
                ),
            })
        }
        TenantsCommand::Export(a) => crate::transfer::export(&cfg, &mut client, a).await,
        TenantsCommand::Import(a) => crate::transfer::import(&cfg, &mut client, a).await,
    }
}
