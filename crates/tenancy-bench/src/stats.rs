//! Small statistics every benchmark reports with, and the machine's load at the time.

/// The `p` quantile (0.0 to 1.0) of an ascending slice, nearest rank; NaN when empty.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[(((sorted.len() - 1) as f64 * p).round() as usize).min(sorted.len() - 1)]
}

/// The median of an unsorted slice as [`percentile`] 0.5 picks it (the upper middle for
/// an even length); NaN when empty.
pub(crate) fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

/// The 1, 5 and 15 minute load averages: the machine is shared, so say how busy it was.
pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}
