//! The rustls client configuration for a set of [`TlsSettings`], and the two certificate
//! checks libpq has that rustls does not ship: the chain without the name (`verify-ca`,
//! and `require`/`prefer` given a root certificate) and none at all (`require` and
//! `prefer` without one; the handshake's signatures are still checked).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::{ConnError, SslMode, TlsSettings};

/// Where the CA certificates come from (`sslrootcert`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RootCerts {
    /// A PEM file of one or more CA certificates.
    File(PathBuf),
    /// The operating system's trusted roots (`sslrootcert=system`); as in libpq, only
    /// with `sslmode=verify-full`.
    System,
}

impl std::fmt::Display for RootCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RootCerts::File(p) => write!(f, "{}", p.display()),
            RootCerts::System => f.write_str("system"),
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls configuration for `tls`, or `None` for `sslmode=disable`.
pub(crate) fn client_config(
    tls: &TlsSettings,
) -> Result<Option<Arc<rustls::ClientConfig>>, ConnError> {
    if tls.mode == SslMode::Disable {
        return Ok(None);
    }
    let provider = provider();
    let roots = match &tls.root_cert {
        None if tls.mode >= SslMode::VerifyCa => {
            return Err(ConnError::Invalid(format!(
                "sslmode={} needs sslrootcert: the file (PEM) of the CA certificate that signed the server's certificate, or sslrootcert=system for the operating system's trusted roots",
                tls.mode
            )))
        }
        None => None,
        Some(RootCerts::System) if tls.mode != SslMode::VerifyFull => {
            return Err(ConnError::Invalid(format!(
                "sslrootcert=system may only be used with sslmode=verify-full (not {}): any public CA can issue a certificate for another name",
                tls.mode
            )))
        }
        Some(RootCerts::System) => Some(system_roots()?),
        Some(RootCerts::File(path)) => Some(file_roots(path)?),
    };
    let verifier: Arc<dyn ServerCertVerifier> = match roots {
        None => Arc::new(Lenient {
            chain: None,
            provider: Arc::clone(&provider),
        }),
        Some(roots) => {
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                    .build()
                    .map_err(|e| {
                        ConnError::Certificate(format!(
                            "sslrootcert={}: {e}",
                            tls.root_cert
                                .as_ref()
                                .map(|r| r.to_string())
                                .unwrap_or_default()
                        ))
                    })?;
            if tls.mode == SslMode::VerifyFull {
                webpki
            } else {
                Arc::new(Lenient {
                    chain: Some(webpki),
                    provider: Arc::clone(&provider),
                })
            }
        }
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnError::Certificate(format!("TLS set-up: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config =
        match (&tls.client_cert, &tls.client_key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let chain = read_certs(cert, "sslcert")?;
                let key = read_key(key)?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    ConnError::Certificate(format!(
                        "sslcert={} and sslkey: {e} (the key must be the certificate's)",
                        cert.display()
                    ))
                })?
            }
            (Some(_), None) => return Err(ConnError::Invalid(
                "sslcert is given without sslkey: give both, the certificate and its private key"
                    .into(),
            )),
            (None, Some(_)) => return Err(ConnError::Invalid(
                "sslkey is given without sslcert: give both, the certificate and its private key"
                    .into(),
            )),
        };
    Ok(Some(Arc::new(config)))
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, ConnError> {
    let bad =
        |detail: String| ConnError::Certificate(format!("{what}={}: {detail}", path.display()));
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(pem_error(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(pem_error(e)))?;
    if certs.is_empty() {
        return Err(bad(
            "no certificate in the file (expected PEM: -----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(certs)
}

fn pem_error(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(e) => format!("cannot read it: {e}"),
        e => format!("not a valid PEM file: {e:?}"),
    }
}

fn file_roots(path: &Path) -> Result<RootCertStore, ConnError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path, "sslrootcert")? {
        roots.add(cert).map_err(|e| {
            ConnError::Certificate(format!(
                "sslrootcert={}: a certificate in it cannot be used as a root: {e}",
                path.display()
            ))
        })?;
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, ConnError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(ConnError::Certificate(format!(
            "sslrootcert=system: no trusted root certificates were found on this machine (install ca-certificates, or name a CA file){}",
            found
                .errors
                .first()
                .map(|e| format!("; {e}"))
                .unwrap_or_default()
        )));
    }
    Ok(roots)
}

/// Reads the client key, refusing one that others may read (as libpq does).
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, ConnError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|e| {
        ConnError::Certificate(format!("sslkey={}: cannot read it: {e}", path.display()))
    })?;
    let allowed = if meta.uid() == 0 { 0o640 } else { 0o600 };
    if meta.mode() & 0o777 & !allowed != 0 {
        return Err(ConnError::Certificate(format!(
            "sslkey={}: the private key may be read by others (mode {:o}); make it readable by its owner only: chmod 600",
            path.display(),
            meta.mode() & 0o777
        )));
    }
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        ConnError::Certificate(format!(
            "sslkey={}: {} (expected an unencrypted PEM private key)",
            path.display(),
            pem_error(e)
        ))
    })
}

/// The certificate checks weaker than `verify-full`. The handshake's signatures are
/// always checked against the certificate presented.
#[derive(Debug)]
struct Lenient {
    /// `Some`: `verify-ca`, the certificate must chain to a trusted root and the name it
    /// carries is not compared with the host. `None`: `require` or `prefer` without a root
    /// certificate, encryption without knowing who the server is (what libpq does).
    chain: Option<Arc<WebPkiServerVerifier>>,
    /// Whose signature algorithms check the handshake.
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        // The chain is checked before the name: a name error means the chain verified.
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            r => r,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
