//! Reading the TLS settings out of a libpq-style connection string. tokio-postgres parses
//! `sslmode` only up to `require` and knows no `sslrootcert`, `sslcert` or `sslkey`, so
//! they are taken out here and the rest is left for tokio-postgres to parse.

use std::path::PathBuf;

use crate::{ConnError, RootCerts, TlsSettings};

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, without checking its certificate (unless
    /// `sslrootcert` is given); plaintext otherwise.
    #[default]
    Prefer,
    /// TLS or fail. The certificate is checked against `sslrootcert` when one is given
    /// (then it is `verify-ca`), else not at all.
    Require,
    /// TLS, and the server's certificate must chain to `sslrootcert`; its name is not
    /// checked.
    VerifyCa,
    /// TLS, the certificate must chain to `sslrootcert` and name the host.
    VerifyFull,
}

impl SslMode {
    /// Whether a connection in this mode must be encrypted.
    pub fn requires_tls(self) -> bool {
        self >= SslMode::Require
    }
}

impl std::fmt::Display for SslMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        })
    }
}

impl std::str::FromStr for SslMode {
    type Err = ConnError;
    fn from_str(s: &str) -> Result<Self, ConnError> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => {
                return Err(ConnError::Invalid(
                    "sslmode=allow is not supported: use prefer (TLS when offered) or disable"
                        .into(),
                ))
            }
            other => {
                return Err(ConnError::Invalid(format!(
                "sslmode={other:?} is not one of disable, prefer, require, verify-ca, verify-full"
            )))
            }
        })
    }
}

/// Splits `s` into the settings tokio-postgres parses and the TLS settings.
pub(crate) fn split(s: &str) -> Result<(String, TlsSettings), ConnError> {
    let mut tls = TlsSettings::default();
    let rest = if s.starts_with("postgres://") || s.starts_with("postgresql://") {
        split_url(s, &mut tls)?
    } else {
        split_keywords(s, &mut tls)?
    };
    Ok((rest, tls))
}

/// Takes one setting if it is a TLS setting; `false` leaves it to tokio-postgres.
fn take(key: &str, value: &str, tls: &mut TlsSettings) -> Result<bool, ConnError> {
    match key {
        "sslmode" => tls.mode = value.parse()?,
        "sslrootcert" => {
            tls.root_cert = Some(if value == "system" {
                RootCerts::System
            } else {
                RootCerts::File(PathBuf::from(value))
            })
        }
        "sslcert" => tls.client_cert = Some(PathBuf::from(value)),
        "sslkey" => tls.client_key = Some(PathBuf::from(value)),
        "sslpassword" | "sslcrl" | "sslcrldir" | "sslsni" | "sslcompression"
        | "ssl_min_protocol_version" | "ssl_max_protocol_version" | "sslcertmode" => {
            return Err(ConnError::Invalid(format!(
                "{key} is not supported: TLS settings understood here are sslmode, sslrootcert, sslcert and sslkey (keys must be unencrypted PEM)"
            )))
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// A URL: TLS settings are taken out of its query string.
fn split_url(s: &str, tls: &mut TlsSettings) -> Result<String, ConnError> {
    let Some((base, query)) = s.split_once('?') else {
        return Ok(s.to_owned());
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or_else(|| {
            ConnError::Invalid(format!(
                "URL parameter {pair:?} has no value: write name=value"
            ))
        })?;
        let key = percent_decode(k)?;
        let value = percent_decode(v)?;
        if !take(&key, &value, tls)? {
            kept.push(pair);
        }
    }
    Ok(if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    })
}

fn percent_decode(s: &str) -> Result<String, ConnError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    ConnError::Invalid(format!("bad percent-encoding in URL parameter {s:?}"))
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| ConnError::Invalid(format!("URL parameter {s:?} is not UTF-8")))
}

/// A keyword string (`key=value key='quoted value'`): TLS settings are taken out, the
/// rest is written back with every value quoted.
fn split_keywords(s: &str, tls: &mut TlsSettings) -> Result<String, ConnError> {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(ConnError::Invalid(format!(
                "setting {key:?} has no value: write {key}=value"
            )));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some(e) => value.push(e),
                        None => break,
                    },
                    '\'' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(ConnError::Invalid(format!(
                    "the value of {key} has no closing quote"
                )));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                if c == '\\' {
                    chars.next();
                    if let Some(e) = chars.next() {
                        value.push(e);
                    }
                    continue;
                }
                value.push(c);
                chars.next();
            }
        }
        if !take(&key, &value, tls)? {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&key);
            out.push_str("='");
            for c in value.chars() {
                if c == '\'' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('\'');
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_tls_parameters_are_taken_out_and_the_rest_kept() {
        let (rest, tls) = split(
            "postgres://app:pw@db.example:5433/tenants?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x&sslcert=/c.pem&sslkey=/k.pem",
        )
        .expect("split");
        assert_eq!(
            rest,
            "postgres://app:pw@db.example:5433/tenants?application_name=x"
        );
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(
            tls.root_cert,
            Some(RootCerts::File(PathBuf::from("/etc/ca.pem")))
        );
        assert_eq!(tls.client_cert, Some(PathBuf::from("/c.pem")));
        assert_eq!(tls.client_key, Some(PathBuf::from("/k.pem")));
    }

    #[test]
    fn keyword_tls_settings_are_taken_out_and_quoting_kept() {
        let (rest, tls) = split(
            "host=/tmp/x dbname = 'a b' sslmode=verify-ca sslrootcert='/p/q r.pem' password='it\\'s'",
        )
        .expect("split");
        assert_eq!(rest, "host='/tmp/x' dbname='a b' password='it\\'s'");
        assert_eq!(tls.mode, SslMode::VerifyCa);
        assert_eq!(
            tls.root_cert,
            Some(RootCerts::File(PathBuf::from("/p/q r.pem")))
        );
        let pg: tokio_postgres::Config = rest.parse().expect("tokio-postgres parses the rest");
        assert_eq!(pg.get_dbname(), Some("a b"));
        assert_eq!(pg.get_password(), Some(&b"it's"[..]));
    }

    #[test]
    fn unknown_modes_and_unsupported_tls_settings_are_refused_by_name() {
        let e = split("host=x sslmode=verify_full").expect_err("bad mode");
        assert!(e.to_string().contains("verify-full"), "{e}");
        let e = split("postgres://h/d?sslpassword=x").expect_err("unsupported");
        assert!(
            e.to_string().contains("sslpassword is not supported"),
            "{e}"
        );
        let e = split("host=x sslmode").expect_err("no value");
        assert!(e.to_string().contains("has no value"), "{e}");
        let (_, tls) = split("postgres://h/d?sslrootcert=system").expect("system");
        assert_eq!(tls.root_cert, Some(RootCerts::System));
    }
}
