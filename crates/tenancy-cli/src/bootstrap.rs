//! `tenancy bootstrap`: sets up an existing PostgreSQL server for tenancy (roles,
//! privileges, schemas, the signed-context functions, the context key, the catalog),
//! idempotently, without superuser where the server allows it. The work is in
//! `tenancy_sdk::bootstrap::server` (and the catalog's migrations); this module parses
//! arguments and prints.
//!
//! Exit codes: 0 set up (or, with --dry-run, the SQL printed); 2 it could not run or
//! refused (what is missing and how to fix it is printed; nothing was changed by the
//! refused phase).

use secrecy::{ExposeSecret, SecretString};
use tenancy_core::{ContextKey, KeyId};
use tenancy_sdk::bootstrap::server::{self, RolePasswords, ServerState};
use tenancy_sdk::bootstrap::{self, ContextImpl, OWNER_ROLE, RUNTIME_ROLE};

/// Arguments of `tenancy bootstrap`.
#[derive(clap::Args, Debug)]
pub(crate) struct BootstrapArgs {
    /// The database to set up, as a role that may: a superuser, or a role with CREATEROLE
    /// that owns the database (e.g. a managed service's admin user).
    #[arg(long)]
    pub database_url: SecretString,
    /// Print the SQL that would run (secrets redacted) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Name of the runtime role; only the default is supported (tenancy's SQL names it).
    #[arg(long, default_value = RUNTIME_ROLE)]
    pub runtime_role: String,
    /// Name of the owner role; only the default is supported (tenancy's SQL names it).
    #[arg(long, default_value = OWNER_ROLE)]
    pub owner_role: String,
    /// Id of the context key (context_key_id of `tenancy serve`).
    #[arg(long, default_value = "k1")]
    pub context_key_id: String,
    /// The context key (64 hex digits) to install; default: keep the installed key of that
    /// id, or generate one (printed once).
    #[arg(long, env = "TENANCY_CONTEXT_KEY_HEX", hide_env_values = true)]
    pub context_key_hex: Option<SecretString>,
    /// Password of tenancy_owner; default: unchanged, or generated (printed once) when the
    /// role is created.
    #[arg(long, env = "TENANCY_OWNER_PASSWORD", hide_env_values = true)]
    pub owner_password: Option<SecretString>,
    /// Password of tenancy_app (the runtime role); default as for the owner.
    #[arg(long, env = "TENANCY_RUNTIME_PASSWORD", hide_env_values = true)]
    pub runtime_password: Option<SecretString>,
    /// Password of tenancy_worker; default as for the owner.
    #[arg(long, env = "TENANCY_WORKER_PASSWORD", hide_env_values = true)]
    pub worker_password: Option<SecretString>,
    /// Password of tenancy_config_reader; default as for the owner.
    #[arg(long, env = "TENANCY_CONFIG_READER_PASSWORD", hide_env_values = true)]
    pub config_reader_password: Option<SecretString>,
}

fn fail(msg: impl std::fmt::Display) -> u8 {
    eprintln!("error: {msg}");
    2
}

/// The connection string of `cfg` as another user, without password (key=value form),
/// with its TLS settings.
pub(crate) fn connection_string_as(pg: &tenancy_conn::PgConfig, user: &str) -> String {
    let cfg = pg.pg();
    let mut out = String::new();
    if let Some(h) = cfg.get_hosts().first() {
        match h {
            tokio_postgres::config::Host::Tcp(h) => out.push_str(&format!("host={h} ")),
            tokio_postgres::config::Host::Unix(p) => {
                out.push_str(&format!("host={} ", p.display()))
            }
        }
    }
    if let Some(p) = cfg.get_ports().first() {
        out.push_str(&format!("port={p} "));
    }
    out.push_str(&format!(
        "user={user} dbname={}",
        cfg.get_dbname().unwrap_or("postgres")
    ));
    let tls = pg.tls().settings();
    if tls.mode != tenancy_conn::SslMode::Prefer {
        out.push_str(&format!(" sslmode={}", tls.mode));
    }
    if let Some(root) = &tls.root_cert {
        out.push_str(&format!(" sslrootcert={root}"));
    }
    out
}

fn generate_password() -> String {
    rand::random::<[u8; 18]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Runs `tenancy bootstrap`; returns the exit code.
pub(crate) async fn run(args: BootstrapArgs) -> u8 {
    if args.runtime_role != RUNTIME_ROLE || args.owner_role != OWNER_ROLE {
        return fail(format!(
            "custom role names are not supported: tenancy's runtime schema, catalog migrations and \
             policies name the roles {OWNER_ROLE} and {RUNTIME_ROLE}; leave out --owner-role and --runtime-role"
        ));
    }
    let kid: KeyId = match args.context_key_id.parse() {
        Ok(k) => k,
        Err(e) => return fail(format!("--context-key-id: {e}")),
    };
    let key = match &args.context_key_hex {
        None => None,
        Some(hex) => match ContextKey::from_hex(kid.clone(), hex.expose_secret()) {
            Ok(k) => Some(k),
            Err(e) => return fail(format!("--context-key-hex: {e} (64 hex digits)")),
        },
    };
    // Through tenancy-conn, like every other command: `sslmode` up to verify-full,
    // `sslrootcert`, client certificates.
    let pg = match tenancy_conn::PgConfig::parse(args.database_url.expose_secret()) {
        Ok(c) => c,
        Err(e) => return fail(format!("parsing --database-url: {e}")),
    };
    let mut client = match tenancy_conn::connect(&pg).await {
        Ok(c) => c,
        Err(e) => {
            return fail(format!(
                "connecting to --database-url: {}",
                tenancy_conn::error_text(&e)
            ))
        }
    };
    let state = match server::inspect(&client).await {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    // Passwords: given, else generated for the roles this run creates, else unchanged.
    let given = |p: &Option<SecretString>| p.as_ref().map(|s| s.expose_secret().to_owned());
    let mut passwords = RolePasswords {
        owner: given(&args.owner_password),
        runtime: given(&args.runtime_password),
        worker: given(&args.worker_password),
        config_reader: given(&args.config_reader_password),
    };
    let mut generated = Vec::new();
    for (role, env, slot) in [
        (OWNER_ROLE, "TENANCY_OWNER_PASSWORD", &mut passwords.owner),
        (
            RUNTIME_ROLE,
            "TENANCY_RUNTIME_PASSWORD",
            &mut passwords.runtime,
        ),
        (
            bootstrap::WORKER_ROLE,
            "TENANCY_WORKER_PASSWORD",
            &mut passwords.worker,
        ),
        (
            bootstrap::CONFIG_READER_ROLE,
            "TENANCY_CONFIG_READER_PASSWORD",
            &mut passwords.config_reader,
        ),
    ] {
        if slot.is_none() && !state.has_role(role) {
            let pw = generate_password();
            generated.push((env, pw.clone()));
            *slot = Some(pw);
        }
    }
    let generated_key = ContextKey::from_bytes(kid.clone(), rand::random());
    let plan = match server::plan(&state, &passwords, key, generated_key) {
        Ok(p) => p,
        Err(e) => return fail(format!("tenancy bootstrap cannot set up this server: {e}")),
    };
    if args.dry_run {
        println!(
            "-- tenancy bootstrap --dry-run: database {} as {} (nothing was changed)",
            state.dbname, state.user
        );
        print!("{}", plan.shown());
        match pending_catalog_migrations(&client).await {
            Some(pending) if pending.is_empty() => println!("-- the catalog is up to date"),
            pending => {
                println!("-- catalog migrations, each in its own transaction, as {OWNER_ROLE}:");
                for m in tenancy_catalog::MIGRATIONS {
                    if pending.as_ref().is_none_or(|p| p.contains(&m.version)) {
                        println!("-- {}\n{}", m.name, m.sql.trim_end());
                    }
                }
            }
        }
        return 0;
    }
    if let Err(e) = server::apply_setup(&mut client, &plan).await {
        return fail(format!(
            "{} (nothing of this step was kept; fix that and run tenancy bootstrap again)",
            detail(e)
        ));
    }
    if let Err(e) = server::apply_runtime(&mut client, &plan).await {
        return fail(format!(
            "{} (roles and schemas are in place; fix that and run tenancy bootstrap again)",
            detail(e)
        ));
    }
    if let Err(e) = migrate_catalog(&mut client, &state).await {
        return fail(format!(
            "migrating the catalog (run tenancy bootstrap again; applied migrations are kept): {}",
            crate::error_text(&e)
        ));
    }
    let imp = match bootstrap::context_impl(&client).await {
        Ok(Some(ContextImpl::Native)) => "native",
        _ => "PL/pgSQL",
    };
    report(&state, &pg, &plan, &generated, imp);
    0
}

/// The error with its causes (what PostgreSQL said).
fn detail(e: tenancy_sdk::Error) -> String {
    tenancy_conn::error_text(&e)
}

/// Versions of the catalog's migrations not yet applied (`None`: the ledger cannot be
/// read, e.g. it does not exist yet or belongs to the owner role).
async fn pending_catalog_migrations(client: &tokio_postgres::Client) -> Option<Vec<i32>> {
    let rows = client
        .query("SELECT version FROM tenancy_catalog.schema_migrations", &[])
        .await
        .ok()?;
    let applied: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    Some(
        tenancy_catalog::MIGRATIONS
            .iter()
            .map(|m| m.version)
            .filter(|v| !applied.contains(v))
            .collect(),
    )
}

/// The catalog's migrations as the owner role (which owns the catalog).
async fn migrate_catalog(
    client: &mut tokio_postgres::Client,
    state: &ServerState,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let switch = state.user != OWNER_ROLE;
    if switch {
        client
            .batch_execute(&format!("SET ROLE {OWNER_ROLE}"))
            .await
            .context("acting as the owner role")?;
    }
    let result = tenancy_catalog::migrate(client).await;
    if switch {
        client
            .batch_execute("RESET ROLE")
            .await
            .context("resetting the role")?;
    }
    result.context("applying the catalog migrations")?;
    Ok(())
}

fn report(
    state: &ServerState,
    cfg: &tenancy_conn::PgConfig,
    plan: &server::Plan,
    generated: &[(&str, String)],
    imp: &str,
) {
    println!(
        "database {} is set up for tenancy (roles, privileges, schemas, catalog; signed context: {imp})",
        state.dbname
    );
    for role in server::ROLES {
        let how = if state.has_role(role) {
            "existed"
        } else {
            "created"
        };
        println!("  role {role}: {how}");
    }
    if !generated.is_empty() {
        println!("generated passwords (shown once; store them in your secret store):");
        for (env, pw) in generated {
            println!("  {env}={pw}");
        }
    }
    match &plan.key {
        Some(k) => {
            println!(
                "context key {} installed (shown once; the application signs with it):",
                k.kid().as_str()
            );
            println!("  TENANCY_CONTEXT_KEY_HEX={}", k.material_hex());
        }
        None => {
            println!("context key kept (already installed; pass --context-key-hex to replace it)")
        }
    }
    if !state.superuser {
        // bootstrap.sql sets it only when run by a superuser (nobody else may).
        println!(
            "recommended, as a superuser (keeps context tokens out of statement logs; the roles cannot undo it):"
        );
        println!(
            "  ALTER ROLE tenancy_app SET log_parameter_max_length = 0; ALTER ROLE tenancy_worker SET log_parameter_max_length = 0;"
        );
    }
    println!("start the control plane with (passwords from your secret store):");
    println!(
        "  DATABASE_URL='{}' TENANCY_CONTEXT_KEY_HEX=… TENANCY_OWNER_PASSWORD=… TENANCY_RUNTIME_PASSWORD=… \
         TENANCY_CONFIG_READER_PASSWORD=… TENANCY_CLUSTER_ADMIN_USER={} TENANCY_CLUSTER_ADMIN_PASSWORD=… tenancy serve",
        connection_string_as(cfg, OWNER_ROLE),
        state.user
    );
}
