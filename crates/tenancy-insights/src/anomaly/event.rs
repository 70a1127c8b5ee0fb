//! The signals: one [`AccessEvent`] per request the layer answered, per tenant-mismatch
//! refusal and per context refusal inside PostgreSQL.

use tenancy_core::TenantId;

/// A 64-bit fingerprint of an identifier the detector only compares (an API key id, a
/// subject, a client network, a user agent): the detector never keeps the text, so a
/// detection names no user or address, and every tracked value costs eight bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(u64);

impl Fingerprint {
    /// The fingerprint of `text` (FNV-1a over its bytes, then a SplitMix64 finaliser so
    /// nearby texts spread over the whole range).
    pub fn of(text: &str) -> Self {
        Fingerprint::of_bytes(text.as_bytes())
    }

    /// The fingerprint of `bytes` (a header value that need not be UTF-8); the same as
    /// [`Fingerprint::of`] for a text's bytes.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        let mut h = Fnv::default();
        h.add(bytes);
        Fingerprint(mix(h.0))
    }

    /// A fingerprint from a number the caller already has (a key's row id).
    pub fn from_u64(n: u64) -> Self {
        Fingerprint(mix(n))
    }

    /// The fingerprint's bits.
    pub fn get(self) -> u64 {
        self.0
    }
}

/// SplitMix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// FNV-1a, fed piecewise (also as a formatter's output, so a text is fingerprinted
/// without being built).
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn add(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

impl std::fmt::Write for Fnv {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.add(s.as_bytes());
        Ok(())
    }
}

/// The client network of an address: its /24 for IPv4, its /48 for IPv6, so a client
/// moving within its network is not a new one. The fingerprint of the network's text
/// (`203.0.113.0/24`, `2001:db8:1::/48`), computed without writing it anywhere: the
/// request layer calls this for every request it records.
pub fn network_of(addr: std::net::IpAddr) -> Fingerprint {
    use std::fmt::Write as _;
    let mut h = Fnv::default();
    // Writing into the hash cannot fail.
    let _ = match addr {
        std::net::IpAddr::V4(a) => {
            let o = a.octets();
            write!(h, "{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        std::net::IpAddr::V6(a) => {
            let s = a.segments();
            write!(h, "{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
    };
    Fingerprint(mix(h.0))
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessKind {
    /// The tenant was resolved and the request answered with `status`.
    Response {
        /// The HTTP status of the answer.
        status: u16,
        /// Whether the request looked one object up by its id (`GET /orders/{id}`):
        /// a 404 on such a request is what enumeration produces.
        id_lookup: bool,
        /// Rows the request's statements returned.
        rows: u64,
        /// Bytes of the response body.
        bytes: u64,
    },
    /// The presented credentials or selectors named different tenants (a 403
    /// `tenant-mismatch`); `tenant` is the tenant of the credential.
    TenantMismatch,
    /// PostgreSQL refused the tenant context a statement carried (a forged, replayed or
    /// expired token).
    ContextRefused,
}

/// One signal, as the request layer or the SDK emits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessEvent {
    /// When (Unix seconds).
    pub at: u64,
    /// The tenant the request was for (for a mismatch: the credential's tenant).
    pub tenant: TenantId,
    /// The API key or token the request presented, when there was one.
    pub credential: Option<Fingerprint>,
    /// The authenticated subject (user or service), when known.
    pub subject: Option<Fingerprint>,
    /// The client's network ([`network_of`]), when known.
    pub network: Option<Fingerprint>,
    /// The client's `User-Agent`, when sent.
    pub agent: Option<Fingerprint>,
    /// What happened.
    pub kind: AccessKind,
}

impl AccessEvent {
    /// An event with no credential, subject or client details.
    pub fn new(at: u64, tenant: TenantId, kind: AccessKind) -> Self {
        AccessEvent {
            at,
            tenant,
            credential: None,
            subject: None,
            network: None,
            agent: None,
            kind,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_are_the_fingerprints_of_their_text() {
        let v4: std::net::IpAddr = "203.0.113.77".parse().expect("v4");
        assert_eq!(network_of(v4), Fingerprint::of("203.0.113.0/24"));
        assert_eq!(
            network_of(v4),
            network_of("203.0.113.1".parse().expect("v4"))
        );
        assert_ne!(
            network_of(v4),
            network_of("203.0.114.1".parse().expect("v4"))
        );
        let v6: std::net::IpAddr = "2001:db8:1:2::5".parse().expect("v6");
        assert_eq!(network_of(v6), Fingerprint::of("2001:db8:1::/48"));
        assert_eq!(Fingerprint::of("agent"), Fingerprint::of_bytes(b"agent"));
    }
}
