//! W3C trace context (`traceparent`, version 00) as requests hand it to the jobs they
//! enqueue: parsed once into [`TraceParent`], stored with the job, returned with the
//! claim, and set as the parent of the job's span.

use std::fmt;
use std::future::Future;

tokio::task_local! {
    /// The trace context of the work the task does (a request, a job), for jobs it
    /// enqueues.
    static CURRENT: Option<TraceParent>;
}

/// A valid W3C `traceparent`: a trace id and the id of the span that is the parent of
/// whatever continues it, never all zero. Written back as version 00
/// (`00-<32 hex>-<16 hex>-<2 hex>`), the only form the queue stores.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// 16 bytes, not all zero.
    trace_id: [u8; 16],
    /// The parent span, 8 bytes, not all zero.
    parent_id: [u8; 8],
    /// Trace flags (bit 0: sampled).
    flags: u8,
}

impl TraceParent {
    /// Parses a `traceparent` header value: `00-<32 hex>-<16 hex>-<2 hex>`, lowercase,
    /// all-zero ids refused. A higher version is read the same way when its first four
    /// fields look the same, as the specification asks (and written back as 00); `ff` is
    /// invalid. `None` for anything else: an invalid value is ignored, never an error.
    pub fn parse(v: &str) -> Option<Self> {
        let mut parts = v.trim().split('-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let span = parts.next()?;
        let flags = parts.next()?;
        if version.len() != 2 || version == "ff" || !is_lower_hex(version) {
            return None;
        }
        if version == "00" && parts.next().is_some() {
            return None;
        }
        if trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
            return None;
        }
        if !is_lower_hex(trace) || !is_lower_hex(span) || !is_lower_hex(flags) {
            return None;
        }
        let mut t = [0u8; 16];
        let mut s = [0u8; 8];
        let mut f = [0u8; 1];
        hex::decode_to_slice(trace, &mut t).ok()?;
        hex::decode_to_slice(span, &mut s).ok()?;
        hex::decode_to_slice(flags, &mut f).ok()?;
        TraceParent::new(t, s, f[0])
    }

    /// From its parts; `None` when an id is all zero.
    pub fn new(trace_id: [u8; 16], parent_id: [u8; 8], flags: u8) -> Option<Self> {
        if trace_id.iter().all(|b| *b == 0) || parent_id.iter().all(|b| *b == 0) {
            return None;
        }
        Some(TraceParent {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// The trace id.
    pub fn trace_id(&self) -> [u8; 16] {
        self.trace_id
    }

    /// The trace id as 32 lowercase hex digits (what logs and spans record).
    pub fn trace_id_hex(&self) -> String {
        hex::encode(self.trace_id)
    }

    /// The parent span id.
    pub fn parent_id(&self) -> [u8; 8] {
        self.parent_id
    }

    /// The trace flags.
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// Whether the caller sampled the trace.
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The trace context of the current task: set by the request layer for a request
    /// that came with a valid `traceparent`, and by the worker for a job that carries
    /// one. [`crate::enqueue`] stores it with the job.
    pub fn current() -> Option<TraceParent> {
        CURRENT.try_with(|t| *t).ok().flatten()
    }

    /// Runs `fut` with `trace` as the task's trace context ([`TraceParent::current`]).
    pub fn scope<F: Future>(trace: Option<TraceParent>, fut: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(trace, fut)
    }
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl TraceParent {
    /// The `traceparent` header's bytes (`00-<trace>-<span>-<flags>`, 55 ASCII bytes),
    /// written without allocating: the request layer stamps one on every response.
    pub fn header_bytes(&self) -> [u8; 55] {
        let mut out = [b'-'; 55];
        out[..2].copy_from_slice(b"00");
        put_hex(&mut out[3..35], &self.trace_id);
        put_hex(&mut out[36..52], &self.parent_id);
        put_hex(&mut out[53..55], &[self.flags]);
        out
    }
}

/// Writes `bytes` as lowercase hex into `out` (twice as long), a table lookup per digit.
fn put_hex(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.header_bytes();
        f.write_str(std::str::from_utf8(&bytes).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceParent({self})")
    }
}

impl std::str::FromStr for TraceParent {
    type Err = InvalidTraceParent;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TraceParent::parse(s).ok_or(InvalidTraceParent)
    }
}

/// A value that is not a valid W3C `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a valid W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>, ids not all zero)")]
pub struct InvalidTraceParent;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_parsing_follows_the_w3c_rules() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t = TraceParent::parse(ok).expect("valid");
        assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex::encode(t.parent_id()), "00f067aa0ba902b7");
        assert!(t.sampled());
        assert_eq!(t.to_string(), ok);
        assert_eq!(&t.header_bytes()[..], ok.as_bytes());
        // A later version with the same first fields is read, and written as 00.
        let v1 = TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-x")
            .expect("future version");
        assert_eq!(
            v1.to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        );
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902g7-01",
        ] {
            assert!(TraceParent::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn the_current_trace_is_set_by_its_scope() {
        assert_eq!(TraceParent::current(), None);
        let t = TraceParent::new([1; 16], [2; 8], 1);
        let seen = TraceParent::scope(t, async { TraceParent::current() }).await;
        assert_eq!(seen, t);
    }
}
