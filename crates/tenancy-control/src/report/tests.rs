//! The report's signature, its canonical form and its page, on a report whose
//! tenant-controlled strings are hostile.

use tenancy_audit::Signer;

use super::model::*;
use super::sign::{sign, verify_bytes, PageCheck, EMBED_OPEN};

const HOSTILE: &str =
    "</script><script>alert(1)</script><img src=https://evil.example/x.png> & \"'";

fn location(placement: &str, region: &str) -> Location {
    Location {
        placement: placement.into(),
        region: region.into(),
        cluster_id: "3f1c9a52-0d4e-4c7a-9a41-5d2b8e7f6a10".into(),
        cluster: Some(format!("{region}-1")),
    }
}

fn event(action: &str) -> ControlEvent {
    ControlEvent {
        at: "2026-11-02T10:00:00Z".into(),
        action: action.into(),
        actor: format!("admin {HOSTILE}"),
        outcome: "success".into(),
        target: Some(HOSTILE.into()),
        request_id: None,
    }
}

fn chain(status: &str) -> ChainView {
    ChainView {
        status: status.into(),
        sealed: 3,
        unsealed: 0,
        head: 3,
        base: 0,
        checkpoints: 1,
        problem: None,
        last_checkpoint: Some(CheckpointSummary {
            chain_pos: 3,
            head_hash: "ab".repeat(32),
            signed_at: "2026-11-02T10:00:01Z".into(),
            public_key: "cd".repeat(32),
        }),
    }
}

pub(crate) fn sample() -> Report {
    let pooled = PlacementPeriod {
        location: location("pooled", "eu-west"),
        from: "2026-10-01T00:00:00Z".into(),
        until: Some("2026-10-20T00:00:00Z".into()),
    };
    let dedicated = PlacementPeriod {
        location: location("dedicated", "eu-central"),
        from: "2026-10-20T00:00:00Z".into(),
        until: None,
    };
    Report {
        generated_at: "2026-11-03T12:00:00Z".into(),
        generator: super::sign::GENERATOR.into(),
        tenant: TenantFacts {
            id: "7d3c1f7e-2b7a-4d8e-9c1e-6a0b5f4d3e21".into(),
            slug: "acme".into(),
            display_name: HOSTILE.into(),
            plan: "pro".into(),
            state: "active".into(),
            created_at: "2026-10-01T00:00:00Z".into(),
        },
        placement: PlacementSection {
            current: location("dedicated", "eu-central"),
            schema_name: None,
            database_name: Some("tenant_acme".into()),
            history: vec![pooled.clone(), dedicated],
            moves: vec![MoveView {
                workflow: "0b8f2f1e-5c8a-4e55-8d6a-3c1b2a9e7f00".into(),
                status: "source_dropped".into(),
                from: location("pooled", "eu-west"),
                to: location("dedicated", "eu-central"),
                started_at: "2026-10-19T23:50:00Z".into(),
                switched_at: Some("2026-10-20T00:00:00Z".into()),
                finished_at: Some("2026-10-21T00:00:00Z".into()),
            }],
        },
        residency: ResidencySection {
            policy: Some(vec!["eu-central".into()]),
            allowed_regions: vec!["eu-central".into()],
            current_region_allowed: true,
            periods_outside: vec![pooled],
        },
        isolation: IsolationSection {
            status: "checked".into(),
            unavailable_reason: None,
            database: Some("tenant_acme".into()),
            runtime_role: Some("tenancy_app".into()),
            context_impl: Some("native".into()),
            server_version: Some(150_010),
            errors: 0,
            warnings: 1,
            info: 0,
            findings: vec![FindingView {
                rule: "shared-table-undeclared".into(),
                severity: "warning".into(),
                object: format!("public.{HOSTILE}"),
                message: HOSTILE.into(),
            }],
            probe_ran: true,
            probe_findings: Vec::new(),
        },
        keys: KeySection {
            kek: "live".into(),
            kek_version: Some(2),
            data_keys_readable: true,
            data_keys: vec![DataKeyView {
                version: 1,
                kek_version: 2,
                created_at: "2026-10-01T00:00:00Z".into(),
            }],
            events: vec![event("keys.shred")],
        },
        audit: AuditSection {
            trusted_key: "cd".repeat(32),
            tenant_log: chain("intact"),
            control_log: chain("intact"),
            per_day: (1..=30)
                .map(|d| DayCount {
                    day: format!("2026-10-{d:02}"),
                    tenant: d * 3 % 7,
                    control: d % 2,
                })
                .collect(),
        },
        anomalies: AnomalySection {
            items: vec![AnomalyView {
                source: "app@host".into(),
                id: 4,
                kind: "enumeration".into(),
                severity: "high".into(),
                score: 2.125,
                first_hour: "2026-11-01T03:00:00Z".into(),
                last_hour: "2026-11-01T05:00:00Z".into(),
                resolution: "ended".into(),
                ended_at: Some("2026-11-01T06:00:00Z".into()),
                evidence: vec![EvidenceView {
                    signal: "not_found_per_hour".into(),
                    baseline: 1.5,
                    observed: 240.0,
                }],
            }],
            open: 0,
            per_week: (0..12)
                .map(|w| WeekCount {
                    week: format!("2026-08-{:02}", w + 1),
                    count: w % 3,
                })
                .collect(),
        },
        retention: RetentionSection {
            audit_retention_days: Some(365),
            legal_hold: true,
            purge_after: None,
            anchors: Vec::new(),
        },
        transfers: vec![event("tenant.export")],
        exports: vec![ExportView {
            at: "2026-08-03T10:00:00Z".into(),
            actor: "admin admin:0badc0de".into(),
            via: Some("api".into()),
            sha256: Some("ab".repeat(32)),
            digest: Some("cd".repeat(32)),
            rows: Some(1200),
            bytes: Some(98_304),
            export_id: Some("6f1c2a7e-0000-4000-8000-000000000001".into()),
            request_id: Some("req-export".into()),
            client_addr: Some("203.0.113.9".into()),
        }],
    }
}

fn signer() -> Signer {
    Signer::from_seed([7; 32])
}

#[test]
fn a_signed_report_verifies_and_one_edited_byte_of_its_content_does_not() {
    let s = signer();
    let signed = sign(sample(), &s);
    assert_eq!(signed.signature.public_key, s.public_key_hex());
    assert_eq!(signed.signature.key_id, s.public_key_hex()[..16]);
    let json = serde_json::to_vec_pretty(&signed).expect("json");
    let v = verify_bytes(&json, Some(&s.public_key_hex())).expect("valid");
    assert_eq!(v.tenant, "7d3c1f7e-2b7a-4d8e-9c1e-6a0b5f4d3e21");
    assert_eq!(v.page, PageCheck::NotHtml);
    // Whitespace and member order are not signed: the compact form verifies too.
    let compact = serde_json::to_vec(&signed).expect("json");
    verify_bytes(&compact, None).expect("valid compact");

    // One byte of the content: the plan "pro" becomes "prp".
    let at = find(&json, b"\"plan\": \"pro\"") + 11;
    let mut edited = json.clone();
    edited[at] = b'p';
    let err = verify_bytes(&edited, None).expect_err("edited");
    assert!(err.contains("does not verify"), "{err}");
    // Every byte of the signed member matters: flip each one in turn (a flip may also
    // break the JSON, which is invalid all the same).
    let start = find(&json, b"\"report\":");
    let end = find(&json, b"\"signature\":");
    for i in (start..end).step_by(97) {
        let mut e = json.clone();
        e[i] ^= 0x01;
        assert!(verify_bytes(&e, None).is_err(), "byte {i} edited");
    }

    // Another key: refused when a key is trusted, and a signature over another key's
    // name does not verify.
    let other = Signer::from_seed([8; 32]);
    let err = verify_bytes(&json, Some(&other.public_key_hex())).expect_err("other key");
    assert!(err.contains("not by the trusted key"), "{err}");
    let mut forged = signed.clone();
    forged.signature.public_key = other.public_key_hex();
    forged.signature.key_id = other.key_id();
    let err = verify_bytes(&serde_json::to_vec(&forged).expect("json"), None).expect_err("forged");
    assert!(err.contains("does not verify"), "{err}");
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{:?} not found", String::from_utf8_lossy(needle)))
}

#[test]
fn the_page_escapes_every_value_loads_nothing_and_verifies_only_unedited() {
    let s = signer();
    let signed = sign(sample(), &s);
    let page = super::html::render(&signed);
    assert!(page.starts_with("<!DOCTYPE html>"));
    // The hostile display name is text, never markup, in the page and in its data.
    assert!(!page.contains("<script>alert"), "unescaped script");
    assert!(!page.contains("<img"), "unescaped img");
    assert_eq!(
        page.matches("</script>").count(),
        1,
        "only the data's own end"
    );
    assert!(page.contains("&lt;/script&gt;&lt;script&gt;alert(1)"));
    // Nothing to load: no src, no link, no url(), no import; the only href-like text
    // is the SVG namespace, which browsers do not fetch.
    for bad in [
        "src=\"", "<link", "url(", "@import", "href=\"", "<iframe", "<object",
    ] {
        assert!(!page.contains(bad), "{bad} in the page");
    }
    assert!(page.contains("Content-Security-Policy"));
    assert!(page.contains(EMBED_OPEN));
    // Inline SVG charts: the placement timeline, audit events per day, anomalies per week.
    assert_eq!(page.matches("<svg").count(), 3);

    let v = verify_bytes(page.as_bytes(), Some(&s.public_key_hex())).expect("valid page");
    assert_eq!(v.page, PageCheck::Matches);
    // One visible byte edited (outside the signed data): the legal hold's "set" → "sat".
    let at = page.find("set (nothing is purged)").expect("hold text") + 1;
    let mut edited = page.clone().into_bytes();
    edited[at] = b'a';
    let err = verify_bytes(&edited, None).expect_err("edited page");
    assert!(err.contains("differs"), "{err}");
    // One byte of the embedded data edited.
    let at = page.find("\"plan\": \"pro\"").expect("plan") + 11;
    let mut edited = page.into_bytes();
    edited[at] = b'p';
    let err = verify_bytes(&edited, None).expect_err("edited data");
    assert!(err.contains("does not verify"), "{err}");
}

#[test]
fn a_page_of_another_version_is_verified_by_its_signed_data_only() {
    let mut r = sample();
    r.generator = "tenancy-control 0.0.1".into();
    let signed = sign(r, &signer());
    let page = super::html::render(&signed);
    let v = verify_bytes(page.as_bytes(), None).expect("valid");
    assert_eq!(
        v.page,
        PageCheck::OtherVersion("tenancy-control 0.0.1".into())
    );
}

#[test]
fn what_is_not_a_signed_report_is_refused_with_the_reason() {
    for (input, want) in [
        (&b"\xff\xfe"[..], "not UTF-8"),
        (b"{", "not valid JSON"),
        (b"{\"format\":\"x\"}", "format"),
        (
            b"{\"format\":\"tenancy.report.v1\",\"report\":{}}",
            "no signature",
        ),
        (b"<!DOCTYPE html><p>hi</p>", "embeds no signed report"),
    ] {
        let err = verify_bytes(input, None).expect_err("refused");
        assert!(
            err.contains(want),
            "{err} for {:?}",
            String::from_utf8_lossy(input)
        );
    }
}
