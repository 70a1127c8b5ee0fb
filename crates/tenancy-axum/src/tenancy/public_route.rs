//! Routes an application declares public: served without a tenant, a credential or a
//! transaction, matched on the path exactly as received.

use crate::ConfigError;

/// One segment of a public route.
#[derive(Debug, PartialEq, Eq)]
enum Segment {
    /// Must be exactly this text.
    Literal(String),
    /// `{name}`: one segment of unreserved characters (letters, digits, `-._~`), not `.`
    /// or `..`.
    Param,
}

/// A route declared public: served without a tenant, a credential or a transaction.
#[derive(Debug)]
pub(super) struct PublicRoute {
    segments: Vec<Segment>,
}

impl PublicRoute {
    /// Parses `/a/{b}/c`. Refuses what would make the match ambiguous with what a router
    /// or a proxy might see: empty, `.` and `..` segments, percent-escapes, wildcards.
    pub(super) fn parse(pattern: &str) -> Result<Self, ConfigError> {
        let bad = |why: &str| ConfigError::Invalid(format!("public route {pattern:?}: {why}"));
        let rest = pattern
            .strip_prefix('/')
            .ok_or_else(|| bad("must start with '/'"))?;
        if rest.is_empty() {
            return Ok(PublicRoute {
                segments: vec![Segment::Literal(String::new())],
            });
        }
        let mut segments = Vec::new();
        for seg in rest.split('/') {
            if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                if name.is_empty() || name.starts_with('*') {
                    return Err(bad("only {name} parameters of one segment are allowed"));
                }
                segments.push(Segment::Param);
            } else if seg.is_empty() || seg == "." || seg == ".." {
                return Err(bad("empty, '.' and '..' segments are not allowed"));
            } else if !seg.bytes().all(is_unreserved) {
                return Err(bad(
                    "a literal segment may contain only letters, digits and -._~",
                ));
            } else {
                segments.push(Segment::Literal(seg.to_owned()));
            }
        }
        Ok(PublicRoute { segments })
    }

    /// Whether `path` (the request path exactly as received, before any stripping or
    /// decoding) is this route. Anything else, including another spelling of the same
    /// path, is not public and needs a credential.
    pub(super) fn matches(&self, path: &str) -> bool {
        let Some(rest) = path.strip_prefix('/') else {
            return false;
        };
        let mut parts = rest.split('/');
        for seg in &self.segments {
            let Some(p) = parts.next() else {
                return false;
            };
            let ok = match seg {
                Segment::Literal(l) => p == l,
                Segment::Param => {
                    !p.is_empty() && p != "." && p != ".." && p.bytes().all(is_unreserved)
                }
            };
            if !ok {
                return false;
            }
        }
        parts.next().is_none()
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}
