//! End-to-end tests of the `tenancy` binary.

use std::process::Command;

#[test]
fn demo_runs_on_the_embedded_default_and_shows_isolation() {
    let out = Command::new(env!("CARGO_BIN_EXE_tenancy"))
        .arg("demo")
        .output()
        .expect("run tenancy demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("acme sees 3 invoices: ACME-0001, ACME-0002, ACME-0003"),
        "{stdout}"
    );
    assert!(
        stdout.contains("globex sees 2 invoices: GLOBEX-0001, GLOBEX-0002"),
        "{stdout}"
    );
    assert!(stdout.contains("then sees 0 rows"), "{stdout}");
    assert!(
        stdout.contains("refused by the policy's WITH CHECK"),
        "{stdout}"
    );
    // The cluster's temporary directory is removed on exit.
    let dir = stdout
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("PostgreSQL ")
                .and_then(|r| r.split_once(" in "))
                .map(|(_, d)| d.to_owned())
        })
        .expect("data dir line");
    assert!(
        !std::path::Path::new(&dir).exists(),
        "{dir} should be removed after the demo"
    );
}

#[test]
fn unknown_subcommands_get_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_tenancy"))
        .arg("frobnicate")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unrecognized subcommand"));
}
