//! Signing a report and verifying a report file (JSON, or the HTML page that embeds it).

use serde_json::Value;
use tenancy_audit::Signer;

use super::canonical::canonical;
use super::model::{Report, ReportSignature, SignedReport, FORMAT};

/// Which bytes a report's signature covers, as every signed report states it.
pub const SIGNED_BYTES: &str = "Ed25519 over the ASCII bytes \"tenancy-signed-document-v1\" and one NUL byte, followed by the RFC 8785 (JCS) canonical JSON serialization of the \"report\" member";

/// The `generator` of the reports this build makes.
pub const GENERATOR: &str = concat!("tenancy-control ", env!("CARGO_PKG_VERSION"));

/// The canonical bytes of a report (what is signed after the domain prefix).
pub fn signed_bytes(report: &Value) -> Vec<u8> {
    canonical(report)
}

/// Signs `report` with the control plane's checkpoint signing key.
pub fn sign(report: Report, signer: &Signer) -> SignedReport {
    // A report is plain data: serializing it cannot fail.
    let value = serde_json::to_value(&report).unwrap_or(Value::Null);
    let public_key = signer.public_key_hex();
    SignedReport {
        format: FORMAT.to_owned(),
        report,
        signature: ReportSignature {
            algorithm: "Ed25519".to_owned(),
            key_id: signer.key_id(),
            value: signer.sign_document(&signed_bytes(&value)),
            public_key,
            signed_bytes: SIGNED_BYTES.to_owned(),
        },
    }
}

/// What a successful verification established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The tenant the report is about.
    pub tenant: String,
    /// When it was made.
    pub generated_at: String,
    /// The key that signed it (hex).
    pub public_key: String,
    /// For an HTML page: whether its visible content was compared with its signed data.
    pub page: PageCheck,
}

/// How an HTML page's visible content was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageCheck {
    /// The file is the JSON document: there is no page.
    NotHtml,
    /// The page is byte for byte what its signed data renders to.
    Matches,
    /// The page was rendered by another version (named): only its embedded signed data
    /// was verified.
    OtherVersion(String),
}

/// Where the HTML page embeds the signed JSON document.
pub(crate) const EMBED_OPEN: &str = r#"<script type="application/json" id="tenancy-report-data">"#;

/// Verifies a report file's bytes: the JSON document, or the HTML page (its embedded
/// signed document, and that the page is exactly what that document renders to). With
/// `trusted`, the signature must be by that public key (hex); without, by the key the
/// document names (check it against one you trust). The error says what is wrong;
/// every error means "not a valid report".
pub fn verify_bytes(file: &[u8], trusted: Option<&str>) -> Result<Verified, String> {
    let text = std::str::from_utf8(file).map_err(|_| "the file is not UTF-8 text".to_owned())?;
    let html = text.trim_start().starts_with("<!DOCTYPE html>");
    let json = if html {
        let start = text
            .find(EMBED_OPEN)
            .ok_or("the page embeds no signed report data")?
            + EMBED_OPEN.len();
        let len = text[start..]
            .find("</script>")
            .ok_or("the page's signed report data is not closed")?;
        &text[start..start + len]
    } else {
        text
    };
    let doc: Value =
        serde_json::from_str(json).map_err(|e| format!("the report is not valid JSON: {e}"))?;
    let field = |v: &Value, name: &str| -> Result<String, String> {
        v.get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("the signature has no {name}"))
    };
    if doc.get("format").and_then(Value::as_str) != Some(FORMAT) {
        return Err(format!("the document's format is not {FORMAT}"));
    }
    let report = doc.get("report").ok_or("the document has no report")?;
    let sig = doc
        .get("signature")
        .ok_or("the document has no signature")?;
    if field(sig, "algorithm")? != "Ed25519" {
        return Err("the signature's algorithm is not Ed25519".into());
    }
    let public_key = field(sig, "public_key")?.to_ascii_lowercase();
    if let Some(t) = trusted {
        if !t.eq_ignore_ascii_case(&public_key) {
            return Err(format!(
                "signed by key {public_key}, not by the trusted key {}",
                t.to_ascii_lowercase()
            ));
        }
    }
    if field(sig, "key_id")? != tenancy_audit::key_id(&public_key) {
        return Err("the signature's key_id does not name its public key".into());
    }
    tenancy_audit::verify_document(&public_key, &signed_bytes(report), &field(sig, "value")?)?;
    let text_of = |name: &str| {
        report
            .pointer(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let page = if html {
        let generator = text_of("/generator");
        if generator == GENERATOR {
            let signed: SignedReport = serde_json::from_value(doc.clone())
                .map_err(|e| format!("the signed data is not a report of this version: {e}"))?;
            if super::html::render(&signed) != text {
                return Err(
                    "the page's content differs from what its signed data renders to: it was edited"
                        .into(),
                );
            }
            PageCheck::Matches
        } else {
            PageCheck::OtherVersion(generator)
        }
    } else {
        PageCheck::NotHtml
    };
    Ok(Verified {
        tenant: text_of("/tenant/id"),
        generated_at: text_of("/generated_at"),
        public_key,
        page,
    })
}
