//! The benchmark JSON contract: `<workspace root>/target/bench/<name>.json`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Serialize;

/// One benchmark result, as checks read it.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// Benchmark name (also the file name).
    pub name: String,
    /// Unit of `ours`/`baseline`, and which way `ratio` is better.
    pub unit: String,
    /// Our figure.
    pub ours: f64,
    /// The baseline's figure, same unit.
    pub baseline: f64,
    /// What the baseline is.
    pub baseline_name: String,
    /// `ours` relative to `baseline`; > 1 is better for us.
    pub ratio: f64,
    /// Everything else: per-concurrency figures, runs, durations.
    pub params: serde_json::Value,
}

/// The workspace root: this crate lives in `<root>/crates/tenancy-bench`.
fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.join("..").join("..");
    root.canonicalize().unwrap_or(root)
}

impl Report {
    /// Writes the report and returns its path.
    pub(crate) fn write(&self) -> Result<PathBuf> {
        let dir = workspace_root().join("target").join("bench");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{}.json", self.name));
        let text = serde_json::to_string_pretty(self).context("serializing the report")?;
        std::fs::write(&path, text + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}
