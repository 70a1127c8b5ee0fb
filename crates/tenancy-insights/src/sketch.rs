//! A latency sketch with a stated relative error: the DDSketch mapping (logarithmic
//! buckets, relative accuracy [`ALPHA`]) over a dense, bounded store.
//!
//! A value `v` (microseconds, clamped to [`MIN_MICROS`]..=[`MAX_MICROS`]) goes to bucket
//! `ceil(log_γ v)` with `γ = (1 + α) / (1 − α)`; a quantile answers the bucket's
//! representative `2γ^k / (γ + 1)`, which is within `α` of every value in the bucket. So
//! any quantile is within a relative error `α` of a value of the sample at that rank, as
//! long as the store did not collapse. The store keeps at most [`MAX_BINS`] contiguous
//! buckets (a span of values of about 1 to 7,500); a wider sample collapses its lowest
//! buckets into one (as DDSketch's collapsing store does), which spoils only the lowest
//! quantiles, never p50 or p99 unless half or 99 % of the sample sits in the collapsed
//! range.
//!
//! Why not `sketches-ddsketch`: its buckets are private, so a sketch could only cross a
//! process boundary through a serde form of its internal store, which a server would
//! have to trust (its merge indexes that store without checks). This sketch's wire form
//! ([`SketchWire`]) is checked field by field before it is merged.

use serde::{Deserialize, Serialize};

/// Relative accuracy of every quantile (1 %).
pub const ALPHA: f64 = 0.01;

/// Most buckets one sketch keeps.
pub const MAX_BINS: usize = 448;

/// Smallest value told apart (1 µs); smaller values count as it.
pub const MIN_MICROS: f64 = 1.0;

/// Largest value told apart (one day in µs); larger values count as it.
pub const MAX_MICROS: f64 = 86_400_000_000.0;

/// `ln γ`.
fn ln_gamma() -> f64 {
    ((1.0 + ALPHA) / (1.0 - ALPHA)).ln()
}

/// The bucket of `micros`.
fn key(micros: f64) -> i32 {
    let v = if micros.is_nan() {
        MIN_MICROS
    } else {
        micros.clamp(MIN_MICROS, MAX_MICROS)
    };
    (v.ln() / ln_gamma()).ceil() as i32
}

/// The largest bucket a value may have.
pub fn max_key() -> i32 {
    key(MAX_MICROS)
}

/// The representative value of bucket `k` (within [`ALPHA`] of all its values).
fn value(k: i32) -> f64 {
    let g = (1.0 + ALPHA) / (1.0 - ALPHA);
    2.0 * (f64::from(k) * ln_gamma()).exp() / (g + 1.0)
}

/// A latency distribution in microseconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sketch {
    /// The bucket of `bins[0]`.
    offset: i32,
    /// Counts of consecutive buckets from `offset`; at most [`MAX_BINS`].
    bins: Vec<u32>,
    /// Values counted (the sum of `bins`, kept to answer ranks without a pass).
    count: u64,
}

impl Sketch {
    /// An empty sketch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of values counted.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Bytes this sketch holds on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.bins.capacity() * std::mem::size_of::<u32>()
    }

    /// Counts one value (microseconds).
    pub fn add(&mut self, micros: f64) {
        self.add_to_key(key(micros), 1);
    }

    fn add_to_key(&mut self, k: i32, n: u32) {
        if n == 0 {
            return;
        }
        if self.bins.is_empty() {
            self.offset = k;
            self.bins.push(0);
        }
        if k < self.offset {
            let grow = (self.offset - k) as usize;
            if self.bins.len() + grow > MAX_BINS {
                // Below the kept range and no room: it joins the lowest bucket.
                let room = MAX_BINS - self.bins.len();
                if room > 0 {
                    self.bins.splice(0..0, std::iter::repeat_n(0, room));
                    self.offset -= room as i32;
                }
                self.bins[0] = self.bins[0].saturating_add(n);
                self.count += u64::from(n);
                return;
            }
            self.bins.splice(0..0, std::iter::repeat_n(0, grow));
            self.offset = k;
        }
        let mut i = (k - self.offset) as usize;
        if i >= self.bins.len() {
            let need = i + 1;
            if need > MAX_BINS {
                // Collapse the lowest buckets into the new lowest kept one.
                let drop = need - MAX_BINS;
                let drop = drop.min(self.bins.len());
                let folded: u32 = self.bins.drain(..drop).fold(0u32, u32::saturating_add);
                self.offset += drop as i32;
                if self.bins.is_empty() {
                    self.offset = k;
                    self.bins.push(0);
                }
                self.bins[0] = self.bins[0].saturating_add(folded);
                i = (k - self.offset) as usize;
            }
            if i >= self.bins.len() {
                self.bins.resize(i + 1, 0);
            }
        }
        self.bins[i] = self.bins[i].saturating_add(n);
        self.count += u64::from(n);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Sketch) {
        for (i, &n) in other.bins.iter().enumerate() {
            self.add_to_key(other.offset + i as i32, n);
        }
    }

    /// The `q`-quantile (0 ≤ q ≤ 1) in microseconds; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 || q.is_nan() {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * (self.count - 1) as f64).floor() as u64;
        let mut seen = 0u64;
        for (i, &n) in self.bins.iter().enumerate() {
            seen += u64::from(n);
            if seen > rank {
                return Some(value(self.offset + i as i32));
            }
        }
        self.bins
            .len()
            .checked_sub(1)
            .map(|last| value(self.offset + last as i32))
    }

    /// The wire form: the offset and the counts without leading or trailing zeros.
    pub fn to_wire(&self) -> SketchWire {
        let first = self.bins.iter().position(|&n| n > 0);
        let last = self.bins.iter().rposition(|&n| n > 0);
        match (first, last) {
            (Some(a), Some(b)) => SketchWire {
                offset: self.offset + a as i32,
                counts: self.bins[a..=b].to_vec(),
            },
            _ => SketchWire {
                offset: 0,
                counts: Vec::new(),
            },
        }
    }

    /// A sketch from its wire form, checked: at most [`MAX_BINS`] counts, buckets within
    /// those of [`MIN_MICROS`]..=[`MAX_MICROS`].
    pub fn from_wire(w: &SketchWire) -> Result<Sketch, String> {
        if w.counts.len() > MAX_BINS {
            return Err(format!(
                "has {} counts; a sketch has at most {MAX_BINS}",
                w.counts.len()
            ));
        }
        let last = i64::from(w.offset) + w.counts.len() as i64 - 1;
        if w.offset < 0 || w.offset > max_key() || last > i64::from(max_key()) {
            return Err(format!(
                "covers buckets {}..={last}; buckets run from 0 (1 µs) to {} (one day)",
                w.offset,
                max_key()
            ));
        }
        if w.counts.is_empty() {
            return Ok(Sketch::new());
        }
        let mut s = Sketch::new();
        for (i, &n) in w.counts.iter().enumerate() {
            s.add_to_key(w.offset + i as i32, n);
        }
        Ok(s)
    }
}

/// A [`Sketch`] on the wire: `counts[i]` values fell in bucket `offset + i`, bucket `k`
/// holding the values `v` (µs) with `γ^(k−1) < v ≤ γ^k`, `γ = 1.01 / 0.99`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SketchWire {
    /// The bucket of `counts[0]` (0 to 1260; `offset` plus the number of counts minus
    /// one must not pass 1260).
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1260))]
    pub offset: i32,
    /// Counts of consecutive buckets (at most 448).
    #[cfg_attr(feature = "openapi", schema(max_items = 448, value_type = Vec<u32>))]
    pub counts: Vec<u32>,
}
