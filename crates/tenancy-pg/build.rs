//! Builds the native tenant-context library (`native/tenancy_context.c`) once for every
//! PostgreSQL major version whose server headers are installed, so a private cluster can
//! load the one that matches its server. Without headers nothing is built and the SDK
//! installs the PL/pgSQL implementation of the same functions instead (slower; see
//! ARCHITECTURE.md, "Signed tenant context").

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=native/tenancy_context.c");
    println!("cargo:rerun-if-changed=/usr/include/postgresql");
    println!("cargo:rerun-if-env-changed=TENANCY_PG_INCLUDE_SERVER");
    println!("cargo:rerun-if-env-changed=CC");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("native/tenancy_context.c");

    // (major, include dir): TENANCY_PG_INCLUDE_SERVER first, then Debian's layout.
    let mut dirs: Vec<(u32, PathBuf)> = Vec::new();
    if let Ok(dir) = std::env::var("TENANCY_PG_INCLUDE_SERVER") {
        let dir = PathBuf::from(dir);
        if let Some(major) = header_major(&dir) {
            dirs.push((major, dir));
        }
    }
    if let Ok(entries) = std::fs::read_dir("/usr/include/postgresql") {
        for e in entries.flatten() {
            let dir = e.path().join("server");
            if let Some(major) = header_major(&dir) {
                if !dirs.iter().any(|(m, _)| *m == major) {
                    dirs.push((major, dir));
                }
            }
        }
    }
    dirs.sort();

    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let mut built = Vec::new();
    for (major, dir) in &dirs {
        let lib = out.join(format!("tenancy_context_{major}.so"));
        let status = Command::new(&cc)
            .args([
                "-O2",
                "-fPIC",
                "-shared",
                "-Wall",
                "-Werror",
                "-Wno-unused-parameter",
            ])
            .arg("-I")
            .arg(dir)
            .arg("-o")
            .arg(&lib)
            .arg(&src)
            .status();
        match status {
            Ok(s) if s.success() => built.push((*major, lib)),
            Ok(s) => println!(
                "cargo:warning=building the native tenant context for PostgreSQL {major} failed ({s}); the PL/pgSQL fallback will be used"
            ),
            Err(e) => println!(
                "cargo:warning=could not run the C compiler {cc:?} ({e}); the PL/pgSQL fallback will be used"
            ),
        }
    }
    if built.is_empty() {
        println!(
            "cargo:warning=no PostgreSQL server headers found (install postgresql-server-dev-NN, \
             or set TENANCY_PG_INCLUDE_SERVER): tenancy's native tenant context is not built and \
             the slower PL/pgSQL implementation will be used"
        );
    }
    let mut code = String::from("/// (PostgreSQL major version, native context library) built by build.rs.\npub(crate) static NATIVE_LIBRARIES: &[(u32, &[u8])] = &[\n");
    for (major, lib) in &built {
        code.push_str(&format!(
            "    ({major}, include_bytes!({:?})),\n",
            lib.display().to_string()
        ));
    }
    code.push_str("];\n");
    std::fs::write(out.join("native_libraries.rs"), code).expect("writing native_libraries.rs");
}

/// The major version of the server headers in `dir` (from `pg_config.h`), if they exist.
fn header_major(dir: &Path) -> Option<u32> {
    if !dir.join("postgres.h").exists() {
        return None;
    }
    let cfg = std::fs::read_to_string(dir.join("pg_config.h")).ok()?;
    cfg.lines().find_map(|l| {
        l.strip_prefix("#define PG_MAJORVERSION_NUM ")
            .and_then(|v| v.trim().parse().ok())
    })
}
