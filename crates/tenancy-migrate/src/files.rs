//! The migrations directory: `NNNN_name.sql` files, one format for every placement.
//!
//! Each file is SQL run with `search_path` set to the target's schema (a tenant's schema,
//! or `public` of a cluster's shared database or of a dedicated database), as the owner
//! role, inside the target's transaction. Tables it creates become tenant tables
//! (`tenancy.make_tenant_table`). Files are validated before anything connects: a bad
//! name, a duplicate or non-positive version, an unreadable or empty file, or top-level
//! transaction control refuse the whole set.

use std::path::{Path, PathBuf};

use tenancy_catalog::{AppMigration, AppMigrations};

use crate::Error;

/// A validated set of migrations, with where they came from.
#[derive(Debug, Clone)]
pub struct MigrationSet {
    /// The migrations in version order.
    pub app: AppMigrations,
    /// The directory (for messages), or a description for generated sets.
    pub source: String,
    /// File path of each migration, parallel to `app.all()`.
    pub paths: Vec<PathBuf>,
}

impl MigrationSet {
    /// A set that did not come from files (tests, benchmarks).
    pub fn from_app(app: AppMigrations, source: &str) -> Self {
        let paths = app
            .all()
            .iter()
            .map(|m| PathBuf::from(format!("{}.sql", m.name)))
            .collect();
        MigrationSet {
            app,
            source: source.to_owned(),
            paths,
        }
    }

    /// The latest version (0 when empty).
    pub fn latest(&self) -> i32 {
        self.app.latest()
    }

    /// The file of migration `version`, for messages.
    pub fn path_of(&self, version: i32) -> String {
        self.app
            .all()
            .iter()
            .zip(&self.paths)
            .find(|(m, _)| m.version == version)
            .map(|(_, p)| p.display().to_string())
            .unwrap_or_else(|| format!("version {version}"))
    }

    /// Reads and validates `dir`.
    pub fn from_dir(dir: &Path) -> Result<Self, Error> {
        let shown = dir.display().to_string();
        let meta = std::fs::metadata(dir).map_err(|e| {
            Error::Files(format!(
                "cannot read the migrations directory {shown}: {e}; pass an existing directory of NNNN_name.sql files with --dir"
            ))
        })?;
        if !meta.is_dir() {
            return Err(Error::Files(format!(
                "{shown} is not a directory; pass the directory that holds the NNNN_name.sql files with --dir"
            )));
        }
        let entries = std::fs::read_dir(dir)
            .map_err(|e| Error::Files(format!("cannot list {shown}: {e}")))?;
        let mut found: Vec<(AppMigration, PathBuf)> = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::Files(format!("cannot list {shown}: {e}")))?;
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                return Err(Error::Files(format!(
                    "{} has a file name that is not UTF-8; rename it",
                    path.display()
                )));
            };
            if name.starts_with('.') || !name.ends_with(".sql") {
                // READMEs, editor files and the like are not migrations.
                continue;
            }
            let stem = &name[..name.len() - 4];
            let version = parse_name(stem).ok_or_else(|| {
                Error::Files(format!(
                    "{} is not a valid migration name: use NNNN_name.sql (a positive version number, an underscore, then lowercase letters, digits or underscores), e.g. 0002_add_invoice_notes.sql",
                    path.display()
                ))
            })?;
            let sql = std::fs::read_to_string(&path)
                .map_err(|e| Error::Files(format!("cannot read {}: {e}", path.display())))?;
            if sql.trim().is_empty() {
                return Err(Error::Files(format!(
                    "{} is empty; write its SQL or remove the file",
                    path.display()
                )));
            }
            if let Some(word) = transaction_control(&sql) {
                return Err(Error::Files(format!(
                    "{} contains {word}: each target's migrations already run in one transaction that tenancy opens and commits; remove the transaction control",
                    path.display()
                )));
            }
            found.push((
                AppMigration {
                    version,
                    name: stem.to_owned(),
                    sql,
                },
                path,
            ));
        }
        if found.is_empty() {
            return Err(Error::Files(format!(
                "{shown} holds no migrations; add files named NNNN_name.sql (e.g. 0001_init.sql)"
            )));
        }
        found.sort_by_key(|(m, _)| m.version);
        for w in found.windows(2) {
            if w[0].0.version == w[1].0.version {
                return Err(Error::Files(format!(
                    "{} and {} share version {}; give each migration its own number",
                    w[0].1.display(),
                    w[1].1.display(),
                    w[0].0.version
                )));
            }
        }
        let paths = found.iter().map(|(_, p)| p.clone()).collect();
        let app = AppMigrations::new(found.into_iter().map(|(m, _)| m).collect())
            .map_err(|e| Error::Files(e.to_string()))?;
        Ok(MigrationSet {
            app,
            source: shown,
            paths,
        })
    }
}

/// The version of `NNNN_name`, if the name is valid.
pub fn parse_name(stem: &str) -> Option<i32> {
    let (num, rest) = stem.split_once('_')?;
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) || rest.is_empty() {
        return None;
    }
    if !rest
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return None;
    }
    let v: i32 = num.parse().ok()?;
    (v > 0).then_some(v)
}

/// A top-level `BEGIN`, `COMMIT`, `ROLLBACK` or `START TRANSACTION` statement, if any
/// (statement starts only; function bodies between dollar quotes are skipped).
fn transaction_control(sql: &str) -> Option<&'static str> {
    let mut in_dollar: Option<String> = None;
    for stmt in sql.split(';') {
        // Track $tag$ … $tag$ bodies roughly: a statement inside one is not top-level.
        let t = stmt.trim_start();
        let first = strip_comments(t);
        if in_dollar.is_none() {
            let upper = first.to_ascii_uppercase();
            for (kw, word) in [
                ("BEGIN", "BEGIN"),
                ("COMMIT", "COMMIT"),
                ("ROLLBACK", "ROLLBACK"),
                ("START TRANSACTION", "START TRANSACTION"),
                ("END", "END"),
            ] {
                if let Some(rest) = upper.strip_prefix(kw) {
                    let r = rest.trim();
                    let whole_word = rest.is_empty() || rest.starts_with(char::is_whitespace);
                    if whole_word
                        && (r.is_empty()
                            || r.starts_with("TRANSACTION")
                            || r.starts_with("WORK")
                            || r.starts_with("ISOLATION"))
                    {
                        return Some(word);
                    }
                }
            }
        }
        for tag in dollar_tags(stmt) {
            match &in_dollar {
                None => in_dollar = Some(tag),
                Some(open) if *open == tag => in_dollar = None,
                Some(_) => {}
            }
        }
    }
    None
}

fn strip_comments(mut s: &str) -> &str {
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix("--") {
            s = rest.split_once('\n').map_or("", |(_, r)| r);
        } else {
            return s;
        }
    }
}

fn dollar_tags(s: &str) -> Vec<String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' {
            let mut j = i + 1;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                j += 1;
            }
            if j < b.len() && b[j] == b'$' {
                out.push(s[i..=j].to_owned());
                i = j + 1;
                continue;
            }
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(parse_name("0001_init"), Some(1));
        assert_eq!(parse_name("12_add_notes"), Some(12));
        for bad in [
            "0000_zero",
            "init",
            "0001",
            "0001_",
            "x001_a",
            "0001_Add",
            "0001-add",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn transaction_control_is_found_outside_function_bodies() {
        assert_eq!(
            transaction_control("BEGIN; CREATE TABLE a (x int);"),
            Some("BEGIN")
        );
        assert_eq!(
            transaction_control("CREATE TABLE a (x int);\ncommit;"),
            Some("COMMIT")
        );
        assert_eq!(
            transaction_control(
                "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 1; END $$;"
            ),
            None
        );
        assert_eq!(
            transaction_control("DO $x$ BEGIN PERFORM 1; END $x$; CREATE TABLE b (y int);"),
            None
        );
    }
}
