use std::path::{Path, PathBuf};
use std::process::Command;

use crate::HarnessError;

/// The directory holding PostgreSQL's server binaries, and their major version.
#[derive(Debug, Clone)]
pub struct PgBinaries {
    /// Directory with `initdb`, `pg_ctl` and `postgres`.
    dir: PathBuf,
    /// Major version reported by `postgres --version`, checked against our minimum.
    major: u32,
}

impl PgBinaries {
    /// Oldest major version we support.
    pub const MIN_MAJOR: u32 = 14;

    /// Finds the server binaries: `PG_BIN`, then `PATH`, then the newest
    /// `/usr/lib/postgresql/*/bin` (Debian's layout), then a few common prefixes.
    pub fn locate() -> Result<Self, HarnessError> {
        Self::locate_in(
            std::env::var_os("PG_BIN"),
            std::env::var_os("PATH"),
            &["/usr/lib/postgresql", "/usr/local/lib/postgresql"],
            &[
                "/usr/pgsql-17/bin",
                "/usr/pgsql-16/bin",
                "/usr/pgsql-15/bin",
                "/usr/pgsql-14/bin",
                "/opt/homebrew/bin",
                "/usr/local/pgsql/bin",
            ],
        )
    }

    /// [`PgBinaries::locate`] with every search location given explicitly.
    pub fn locate_in(
        pg_bin: Option<std::ffi::OsString>,
        path: Option<std::ffi::OsString>,
        versioned_roots: &[&str],
        extra_dirs: &[&str],
    ) -> Result<Self, HarnessError> {
        let mut looked = Vec::new();
        if let Some(dir) = pg_bin {
            let dir = PathBuf::from(dir);
            looked.push(format!("PG_BIN={}", dir.display()));
            if has_server(&dir) {
                return Self::at(dir);
            }
        }
        if let Some(path) = path {
            for dir in std::env::split_paths(&path) {
                if has_server(&dir) {
                    return Self::at(dir);
                }
            }
            looked.push("PATH".into());
        }
        let mut candidates: Vec<(u32, PathBuf)> = Vec::new();
        for root in versioned_roots {
            looked.push(format!("{root}/*/bin"));
            if let Ok(entries) = std::fs::read_dir(root) {
                for entry in entries.flatten() {
                    let bin = entry.path().join("bin");
                    let version = entry
                        .file_name()
                        .to_string_lossy()
                        .parse::<u32>()
                        .unwrap_or(0);
                    if has_server(&bin) {
                        candidates.push((version, bin));
                    }
                }
            }
        }
        for extra in extra_dirs {
            let dir = PathBuf::from(extra);
            looked.push((*extra).into());
            if has_server(&dir) {
                candidates.push((0, dir));
            }
        }
        candidates.sort();
        match candidates.pop() {
            Some((_, dir)) => Self::at(dir),
            None => Err(HarnessError::BinariesNotFound {
                looked_in: looked.join(", "),
            }),
        }
    }

    /// Uses the binaries in `dir`, checking the version.
    pub fn at(dir: PathBuf) -> Result<Self, HarnessError> {
        let out = Command::new(dir.join("postgres"))
            .arg("--version")
            .output()
            .map_err(crate::io_err(format!(
                "running {}/postgres --version",
                dir.display()
            )))?;
        let text = String::from_utf8_lossy(&out.stdout);
        // "postgres (PostgreSQL) 15.19 (Debian 15.19-0+deb12u1)"
        let major = text
            .split_whitespace()
            .nth(2)
            .and_then(|v| v.split('.').next())
            .and_then(|m| m.parse::<u32>().ok())
            .ok_or_else(|| HarnessError::Command {
                what: "reading the PostgreSQL version".into(),
                detail: format!("unexpected output {text:?}"),
            })?;
        if major < Self::MIN_MAJOR {
            return Err(HarnessError::TooOld {
                found: major,
                dir: dir.display().to_string(),
            });
        }
        Ok(PgBinaries { dir, major })
    }

    /// The bin directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The major version.
    pub fn major(&self) -> u32 {
        self.major
    }

    /// Path of one binary in the directory.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

fn has_server(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "postgres"]
        .iter()
        .all(|b| dir.join(b).is_file())
}
