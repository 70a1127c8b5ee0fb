//! CPU accounting from /proc: this process, and the PostgreSQL server (postmaster and
//! all its children), so each variant's per-operation cost can be split client/server.

use std::sync::OnceLock;

/// CPU seconds used so far: (client, server). `None` where /proc is unreadable.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuSnapshot {
    client: Option<f64>,
    server: Option<f64>,
}

fn clk_tck() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// (ppid, utime + stime in ticks) from /proc/<pid>/stat.
fn stat(pid: &str) -> Option<(u32, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: split after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); ppid is field 4, utime 14, stime 15.
    let ppid = f.get(1)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

fn server_ticks(postmaster: u32) -> Option<u64> {
    let mut total = stat(&postmaster.to_string())?.1;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Some((ppid, ticks)) = stat(name) {
            if ppid == postmaster {
                total += ticks;
            }
        }
    }
    Some(total)
}

impl CpuSnapshot {
    /// Takes a snapshot now.
    pub(crate) fn take(postmaster: Option<u32>) -> Self {
        let tck = clk_tck();
        CpuSnapshot {
            client: stat("self").map(|(_, t)| t as f64 / tck),
            server: postmaster.and_then(server_ticks).map(|t| t as f64 / tck),
        }
    }

    /// CPU seconds (client, server) used between `earlier` and `self`.
    pub(crate) fn since(&self, earlier: &CpuSnapshot) -> (Option<f64>, Option<f64>) {
        let d = |a: Option<f64>, b: Option<f64>| Some(a? - b?);
        (
            d(self.client, earlier.client),
            d(self.server, earlier.server),
        )
    }
}
