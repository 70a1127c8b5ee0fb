//! `tenancy report`: a tenant's signed compliance evidence report from a running
//! `tenancy serve` (`GET /v1/tenants/{id}/report`), written as the signed JSON document
//! or as the HTML page rendered from it (the control plane's own renderer); and
//! `tenancy report verify FILE`, which checks either kind of file offline.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Context};
use secrecy::SecretString;
use tenancy_control::report::{self, PageCheck, SignedReport};

/// Arguments of `tenancy report`.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(crate) struct ReportArgs {
    #[command(subcommand)]
    command: Option<ReportCommand>,
    #[command(flatten)]
    fetch: FetchArgs,
}

/// What to fetch and where to write it.
#[derive(clap::Args, Debug)]
struct FetchArgs {
    /// The tenant (id or slug).
    #[arg(long, required = true)]
    tenant: Option<String>,
    /// `json` (the signed document, for machines) or `html` (one self-contained page for
    /// people, embedding the signed document).
    #[arg(long, value_enum, default_value = "json")]
    format: Format,
    /// Write here instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Address of `tenancy serve` (`http://host:port`; plain HTTP: loopback or a tunnel).
    #[arg(long, env = "TENANCY_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// An admin token of the server.
    #[arg(
        long,
        env = "TENANCY_ADMIN_TOKEN",
        hide_env_values = true,
        required = true
    )]
    token: Option<SecretString>,
}

/// A report's representation.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    /// The signed JSON document.
    Json,
    /// The HTML page.
    Html,
}

#[derive(clap::Subcommand, Debug)]
enum ReportCommand {
    /// Check a report file (JSON, or an HTML page: its embedded signed data and that the
    /// page is exactly what that data renders to). Exit 0: valid; 1: invalid (edited,
    /// another key, not a report); 2: could not run.
    Verify {
        /// The report file.
        file: PathBuf,
        /// Accept only a signature by this Ed25519 public key (hex; the control plane's
        /// audit checkpoint key, logged at its start). Without it, the key the report
        /// names is used: check that key yourself.
        #[arg(long = "public-key")]
        public_key: Option<String>,
    },
}

/// Runs the subcommand; returns the exit code.
pub(crate) async fn run(args: ReportArgs) -> u8 {
    match args.command {
        Some(ReportCommand::Verify { file, public_key }) => verify(&file, public_key.as_deref()),
        None => match fetch(args.fetch).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: {}", crate::error_text(&e));
                2
            }
        },
    }
}

/// Whether `s` names a tenant the way the API's path does (a UUID or a slug).
fn tenant_ref(s: &str) -> bool {
    s.parse::<tenancy_core::TenantId>().is_ok() || s.parse::<tenancy_core::Slug>().is_ok()
}

async fn fetch(args: FetchArgs) -> anyhow::Result<()> {
    let authority = crate::client::authority(&args.url, "tenancy report")?;
    let (Some(tenant), Some(token)) = (&args.tenant, &args.token) else {
        bail!("--tenant and --token (or TENANCY_ADMIN_TOKEN) are required");
    };
    if !tenant_ref(tenant) {
        bail!("--tenant {tenant:?} is neither a tenant id (a UUID) nor a slug");
    }
    let body = crate::client::get(
        &authority,
        &format!("/v1/tenants/{tenant}/report?format=json"),
        token,
    )
    .await?;
    // What the server signed is checked before anything is written.
    let checked = report::verify_bytes(&body, None)
        .map_err(|e| anyhow::anyhow!("the server's report does not verify: {e}"))?;
    let signed: SignedReport =
        serde_json::from_slice(&body).context("reading the server's report")?;
    let out = match args.format {
        Format::Json => {
            let mut text = serde_json::to_string_pretty(&signed).context("writing the report")?;
            text.push('\n');
            text
        }
        Format::Html => report::html::render(&signed),
    };
    match &args.out {
        Some(path) => std::fs::write(path, &out)
            .with_context(|| format!("writing the report to {}", path.display()))?,
        None => std::io::stdout()
            .write_all(out.as_bytes())
            .context("writing the report to stdout")?,
    }
    eprintln!(
        "report of tenant {} ({}), signed by key {}",
        checked.tenant, checked.generated_at, checked.public_key
    );
    Ok(())
}

fn verify(file: &std::path::Path, public_key: Option<&str>) -> u8 {
    if let Some(k) = public_key {
        if !(k.len() == 64 && k.bytes().all(|b| b.is_ascii_hexdigit())) {
            eprintln!("error: --public-key {k:?} is not 32 bytes of hex");
            return 2;
        }
    }
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: reading {}: {e}", file.display());
            return 2;
        }
    };
    match report::verify_bytes(&bytes, public_key) {
        Ok(v) => {
            let page = match &v.page {
                PageCheck::NotHtml => String::new(),
                PageCheck::Matches => "; the page is exactly what its signed data renders to".into(),
                PageCheck::OtherVersion(g) => format!(
                    "; the page was rendered by {g:?}, another version: only its embedded signed data was verified, not the visible page"
                ),
            };
            println!(
                "valid: report of tenant {} generated at {}, signed by key {}{page}",
                v.tenant, v.generated_at, v.public_key
            );
            if public_key.is_none() {
                eprintln!("note: no --public-key given: the signature was checked against the key the report names");
            }
            0
        }
        Err(e) => {
            println!("INVALID: {}: {e}", file.display());
            1
        }
    }
}
