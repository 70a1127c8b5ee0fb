//! `tenancy report` against a real `tenancy serve`: the signed JSON and the HTML page of
//! a provisioned tenant written to files, then `tenancy report verify` on each (exit 0),
//! on a copy with one byte edited (exit 1), with another trusted key (exit 1), and on a
//! file that cannot be read (exit 2).

use std::process::Command;
use std::time::Duration;

use crate::ops::{create_tenant, http, port_of, token_of, wait_active, wait_ready, Served};

fn tenancy(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tenancy"))
        .args(args)
        .env_remove("TENANCY_URL")
        .env_remove("TENANCY_ADMIN_TOKEN")
        .output()
        .expect("run tenancy");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn report_writes_json_and_html_that_verify_until_one_byte_is_edited() {
    let serve = Served::start(&[], &[]);
    let banner = serve.banner("admin token");
    let port = port_of(&banner);
    let token = token_of(&banner);
    wait_ready(port);
    let (id, _) = create_tenant(port, &token, "evidence", "pooled");
    wait_active(port, &token, &id, Duration::from_secs(60));
    // The control plane's signing key, as its audit pages name it.
    let auth = format!("Bearer {token}");
    let page = http(
        port,
        "GET",
        &format!("/v1/tenants/{id}/audit?log=control"),
        &[("Authorization", &auth)],
        None,
    );
    let key = page.json()["public_key"]
        .as_str()
        .expect("public key")
        .to_owned();

    let dir = std::env::temp_dir().join(format!("tenancy-report-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let url = format!("http://127.0.0.1:{port}");
    for format in ["json", "html"] {
        let file = dir.join(format!("evidence.{format}"));
        let file = file.to_str().expect("path");
        let (code, _, err) = tenancy(&[
            "report", "--tenant", "evidence", "--format", format, "--out", file, "--url", &url,
            "--token", &token,
        ]);
        assert_eq!(code, 0, "{err}");
        assert!(err.contains(&id) && err.contains(&key), "{err}");
        let (code, out, err) = tenancy(&["report", "verify", file, "--public-key", &key]);
        assert_eq!(code, 0, "{out} {err}");
        assert!(out.starts_with("valid: report of tenant "), "{out}");
        if format == "html" {
            assert!(
                out.contains("exactly what its signed data renders to"),
                "{out}"
            );
        }

        // One byte edited: the first "evidence" (the slug in the JSON, a word of the
        // visible title in the page).
        let mut bytes = std::fs::read(file).expect("read");
        let at = bytes
            .windows(8)
            .position(|w| w == b"evidence")
            .expect("slug in the file");
        bytes[at] = b'E';
        let edited = dir.join(format!("edited.{format}"));
        std::fs::write(&edited, &bytes).expect("write");
        let (code, out, _) = tenancy(&["report", "verify", edited.to_str().expect("path")]);
        assert_eq!(code, 1, "{out}");
        assert!(out.starts_with("INVALID"), "{out}");
        // Another trusted key.
        let (code, out, _) = tenancy(&["report", "verify", file, "--public-key", &"ab".repeat(32)]);
        assert_eq!(code, 1, "{out}");
    }
    // Could not run: no such file, a malformed key, no tenant.
    let missing = dir.join("missing.json");
    let (code, _, err) = tenancy(&["report", "verify", missing.to_str().expect("path")]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = tenancy(&["report", "verify", "x", "--public-key", "zz"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--public-key"), "{err}");
    let (code, _, err) = tenancy(&[
        "report",
        "--tenant",
        "Not A Slug",
        "--url",
        &url,
        "--token",
        &token,
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--tenant"), "{err}");
    let (code, _, err) = tenancy(&[
        "report",
        "--tenant",
        "no-such-tenant",
        "--url",
        &url,
        "--token",
        &token,
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("404"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
