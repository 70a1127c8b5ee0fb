//! `tenancy audit …`: seal the audit chains (tenant logs and the control plane's own log)
//! and sign checkpoints, verify them (live or from an export; a purged head from its
//! signed anchor), export one tenant's log, set or lift a tenant's legal hold.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use secrecy::{ExposeSecret, SecretString};
use tenancy_audit::{Checkpoint, Signer, Trust, Verdict};
use tenancy_core::TenantId;

/// Arguments of `tenancy audit`.
#[derive(clap::Args, Debug)]
pub(crate) struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

/// Where the log and the checkpoints are.
#[derive(clap::Args, Debug)]
struct Databases {
    /// The tenant database holding `tenancy.audit_events` (owner role).
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<SecretString>,
    /// The catalog holding the signed checkpoints (owner role); default: the database URL.
    #[arg(long, env = "TENANCY_CATALOG_URL")]
    catalog_url: Option<SecretString>,
}

#[derive(clap::Subcommand, Debug)]
enum AuditCommand {
    /// Recompute every tenant's chain (or one) and check it against the signed
    /// checkpoints. Names the first bad event. Exit 0: intact; 1: tampered; 2: could not run.
    Verify {
        #[command(flatten)]
        db: Databases,
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Checkpoints published to a JSON-lines file, checked besides the catalog's.
        #[arg(long)]
        checkpoints: Option<PathBuf>,
        /// Verify an export (`tenancy audit export`) offline instead of a database (the
        /// database URLs are then not used).
        #[arg(long, conflicts_with = "tenant")]
        file: Option<PathBuf>,
        /// Trust checkpoints signed by this Ed25519 public key (hex); repeatable.
        #[arg(long = "public-key")]
        public_keys: Vec<String>,
        /// Trust checkpoints signed by this signing key file (its public half).
        #[arg(long)]
        key: Option<PathBuf>,
        /// Which log: `tenant` (applications' events, in the tenant database) or
        /// `control` (the control plane's own log, in the catalog).
        #[arg(long, default_value = "tenant", value_parser = parse_log)]
        log: tenancy_audit::Log,
    },
    /// Write one tenant's events, hashes, checkpoints and public keys as JSON lines.
    /// Exit 0: written; 2: could not run.
    Export {
        #[command(flatten)]
        db: Databases,
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Checkpoints published to a JSON-lines file, included besides the catalog's.
        #[arg(long)]
        checkpoints: Option<PathBuf>,
        /// Write here instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Set (or with --clear, lift) a tenant's legal hold: while it is set, neither the
    /// tenant nor its audit log is purged. Recorded in the control plane's audit log.
    /// Exit 0: done; 2: could not run.
    Hold {
        /// The catalog (owner role).
        #[arg(long, env = "DATABASE_URL")]
        database_url: Option<SecretString>,
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Lift the hold instead of setting it.
        #[arg(long)]
        clear: bool,
        /// Who sets it, recorded as the event's actor (default: `cli:` and $USER).
        #[arg(long)]
        actor: Option<String>,
    },
    /// Seal recorded events into their tenants' chains and sign a checkpoint for every
    /// chain that grew. Exit 0: done; 2: could not run.
    Seal {
        #[command(flatten)]
        db: Databases,
        /// The Ed25519 signing key file (hex seed); created with a fresh key (mode 0600)
        /// when missing. Keep it outside the database.
        #[arg(long)]
        key: PathBuf,
        /// Also append each new checkpoint to this JSON-lines file.
        #[arg(long)]
        publish: Option<PathBuf>,
        /// Repeat every this many seconds until interrupted (0: once).
        #[arg(long, default_value_t = 0)]
        every: u64,
    },
}

/// Runs the subcommand; returns the exit code.
pub(crate) async fn run(args: AuditArgs) -> u8 {
    let r = match args.command {
        AuditCommand::Verify {
            db,
            tenant,
            checkpoints,
            file,
            public_keys,
            key,
            log,
        } => verify(db, tenant, checkpoints, file, public_keys, key, log).await,
        AuditCommand::Export {
            db,
            tenant,
            checkpoints,
            output,
        } => export(db, tenant, checkpoints, output).await.map(|()| 0),
        AuditCommand::Hold {
            database_url,
            tenant,
            clear,
            actor,
        } => hold(database_url, tenant, !clear, actor).await.map(|()| 0),
        AuditCommand::Seal {
            db,
            key,
            publish,
            every,
        } => seal(db, key, publish, every).await.map(|()| 0),
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", crate::error_text(&e));
            2
        }
    }
}

async fn connect(url: &SecretString, what: &str) -> Result<tokio_postgres::Client> {
    let pg = tenancy_conn::PgConfig::parse(url.expose_secret())
        .with_context(|| format!("parsing the {what} URL"))?;
    tenancy_conn::connect(&pg)
        .await
        .with_context(|| format!("connecting to the {what}"))
}

/// The tenant database and the catalog connections (one when they are the same URL).
async fn connect_both(
    db: &Databases,
) -> Result<(tokio_postgres::Client, Option<tokio_postgres::Client>)> {
    let url = db
        .database_url
        .as_ref()
        .context("no database: pass --database-url or set DATABASE_URL")?;
    let owner = connect(url, "tenant database").await?;
    let catalog = match &db.catalog_url {
        Some(c) if c.expose_secret() != url.expose_secret() => Some(connect(c, "catalog").await?),
        _ => None,
    };
    Ok((owner, catalog))
}

/// Whether the catalog has the checkpoint table (a database without one has no
/// checkpoints yet).
async fn has_checkpoints(catalog: &tokio_postgres::Client) -> Result<bool> {
    Ok(catalog
        .query_one(
            "SELECT to_regclass('tenancy_catalog.audit_checkpoints') IS NOT NULL",
            &[],
        )
        .await
        .context("looking for the checkpoint table")?
        .get(0))
}

fn parse_tenant(t: &str) -> Result<TenantId> {
    t.parse::<TenantId>()
        .with_context(|| format!("--tenant {t:?} is not a tenant id (a UUID)"))
}

fn read_checkpoints(file: Option<&PathBuf>) -> Result<Vec<Checkpoint>> {
    match file {
        Some(f) => Ok(tenancy_audit::read_jsonl(f)?),
        None => Ok(Vec::new()),
    }
}

fn print_verdict(v: &Verdict) {
    let mut out = std::io::stdout();
    let _ = match &v.tampering {
        None => writeln!(
            out,
            "tenant {}: intact ({} sealed events, head at position {}, {} unsealed, {} checkpoints{})",
            v.tenant,
            v.sealed,
            v.head,
            v.unsealed,
            v.checkpoints,
            if v.base > 0 {
                format!(", verified from the purge anchor at position {}", v.base)
            } else {
                String::new()
            }
        ),
        Some(t) => writeln!(out, "tenant {}: TAMPERED: {t}", v.tenant),
    };
}

fn parse_log(s: &str) -> Result<tenancy_audit::Log, String> {
    tenancy_audit::Log::parse(s).ok_or_else(|| format!("{s:?} is not a log: use tenant or control"))
}

async fn verify(
    db: Databases,
    tenant: Option<String>,
    checkpoints: Option<PathBuf>,
    file: Option<PathBuf>,
    public_keys: Vec<String>,
    key: Option<PathBuf>,
    log: tenancy_audit::Log,
) -> Result<u8> {
    let mut trusted = public_keys;
    for k in &trusted {
        anyhow::ensure!(
            k.len() == 64 && k.bytes().all(|b| b.is_ascii_hexdigit()),
            "--public-key {k:?} is not 32 bytes of hex"
        );
    }
    if let Some(k) = &key {
        trusted.push(Signer::load(k)?.public_key_hex());
    }
    let trust = if trusted.is_empty() {
        eprintln!("note: no --public-key or --key given: checkpoint signatures are checked against the keys they name");
        Trust::AnyKey
    } else {
        Trust::Keys(trusted)
    };
    let extra = read_checkpoints(checkpoints.as_ref())?;
    let verdicts = if let Some(f) = file {
        let input = std::fs::File::open(&f)
            .with_context(|| format!("opening the export {}", f.display()))?;
        let exp = tenancy_audit::read_export(&mut std::io::BufReader::new(input))
            .with_context(|| format!("reading the export {}", f.display()))?;
        let mut cps = exp.checkpoints;
        cps.extend(extra);
        vec![tenancy_audit::verify_chain_in(
            tenancy_audit::Log::Tenant,
            exp.tenant,
            &exp.events,
            &cps,
            &exp.anchors,
            &trust,
        )]
    } else {
        // The control plane's log is in the catalog (`--log control`; the platform chain is
        // tenant 00000000-0000-0000-0000-000000000000).
        let tenant = match tenant.as_deref() {
            Some(t) if log == tenancy_audit::Log::Control => Some(
                t.parse::<uuid::Uuid>()
                    .with_context(|| format!("--tenant {t:?} is not a UUID"))?,
            ),
            Some(t) => Some(parse_tenant(t)?.as_uuid()),
            None => None,
        };
        let (owner, catalog) = connect_both(&db).await?;
        let catalog = catalog.as_ref().unwrap_or(&owner);
        let catalog = has_checkpoints(catalog).await?.then_some(catalog);
        let events_db = match log {
            tenancy_audit::Log::Control => catalog.unwrap_or(&owner),
            _ => &owner,
        };
        tenancy_audit::verify_log(events_db, catalog, log, tenant, &extra, &trust).await?
    };
    for v in &verdicts {
        print_verdict(v);
    }
    Ok(if verdicts.iter().all(Verdict::intact) {
        0
    } else {
        1
    })
}

async fn export(
    db: Databases,
    tenant: String,
    checkpoints: Option<PathBuf>,
    output: Option<PathBuf>,
) -> Result<()> {
    let tenant = parse_tenant(&tenant)?;
    let extra = read_checkpoints(checkpoints.as_ref())?;
    let (owner, catalog) = connect_both(&db).await?;
    let catalog = catalog.as_ref().unwrap_or(&owner);
    let catalog = has_checkpoints(catalog).await?.then_some(catalog);
    let mut buf = Vec::new();
    let n = tenancy_audit::export(&owner, catalog, tenant.as_uuid(), &extra, &mut buf).await?;
    match output {
        Some(path) => std::fs::write(&path, &buf)
            .with_context(|| format!("writing the export to {}", path.display()))?,
        None => std::io::stdout()
            .write_all(&buf)
            .context("writing the export to stdout")?,
    }
    eprintln!("exported {n} events of tenant {tenant}");
    Ok(())
}

async fn hold(
    url: Option<SecretString>,
    tenant: String,
    on: bool,
    actor: Option<String>,
) -> Result<()> {
    let tenant = parse_tenant(&tenant)?;
    let url = url.context("no catalog: pass --database-url or set DATABASE_URL")?;
    let mut catalog = connect(&url, "catalog").await?;
    let who = operator(actor);
    let t = tenancy_control::audit::set_legal_hold(&mut catalog, tenant, on, &who)
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.detail))?;
    println!(
        "tenant {}: legal hold {}",
        t.id,
        if t.legal_hold { "set" } else { "lifted" }
    );
    Ok(())
}

async fn seal(db: Databases, key: PathBuf, publish: Option<PathBuf>, every: u64) -> Result<()> {
    let signer = Signer::load_or_generate(&key)?;
    let (mut owner, mut catalog) = connect_both(&db).await?;
    tenancy_audit::install_catalog(catalog.as_ref().unwrap_or(&owner))
        .await
        .context("installing the audit tables in the catalog")?;
    eprintln!("signing checkpoints with key {}", signer.public_key_hex());
    loop {
        let report = tenancy_audit::seal(&mut owner, 5000).await?;
        // The control plane's own log, in the catalog.
        let control = match catalog.as_mut() {
            Some(c) => tenancy_audit::seal_log(c, tenancy_audit::Log::Control, 5000).await?,
            None => tenancy_audit::seal_log(&mut owner, tenancy_audit::Log::Control, 5000).await?,
        };
        let cat = catalog.as_ref().unwrap_or(&owner);
        let mut cps = tenancy_audit::checkpoint(&owner, cat, &signer, publish.as_deref()).await?;
        cps.extend(
            tenancy_audit::checkpoint_log(
                tenancy_audit::Log::Control,
                cat,
                cat,
                &signer,
                publish.as_deref(),
            )
            .await?,
        );
        println!(
            "sealed {} events in {} chains; signed {} checkpoints",
            report.sealed + control.sealed,
            report.heads.len() + control.heads.len(),
            cps.len()
        );
        if every == 0 {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(every)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// The operator at the command line as an audited admin: `actor`, else `cli:$USER`.
pub(crate) fn operator(actor: Option<String>) -> tenancy_control::audit::Who {
    let actor = actor.unwrap_or_else(|| {
        format!(
            "cli:{}",
            std::env::var("USER").unwrap_or_else(|_| "operator".into())
        )
    });
    let mut who = tenancy_control::audit::Who::named(&actor, Default::default());
    who.actor.kind = tenancy_audit::ActorKind::Admin;
    who
}
