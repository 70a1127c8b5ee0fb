//! End-to-end tests of the `tenancy-demo` binary.

use std::process::Command;

#[test]
fn demo_runs_on_the_embedded_default_and_shows_isolation() {
    let out = Command::new(env!("CARGO_BIN_EXE_tenancy-demo"))
        .output()
        .expect("run tenancy-demo");
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
    assert!(stdout.contains("then sees 0 of globex's rows"), "{stdout}");
    assert!(
        stdout.contains("refused by the policy's WITH CHECK"),
        "{stdout}"
    );
    // The example app as the demo serves it: naming a tenant without a credential is
    // refused on every method, and acme's token cannot select globex.
    for line in [
        "GET    /t/globex/customers with no credential → 401 unauthenticated",
        "POST   /t/globex/customers with no credential → 401 unauthenticated",
        "DELETE /t/globex/invoices/",
        "GET    /customers Host: globex.invoicing.localhost with no credential → 401 unauthenticated",
        "GET    /t/globex/customers with acme's token → 403 tenant-mismatch",
    ] {
        assert!(stdout.contains(line), "{line:?} missing from\n{stdout}");
    }
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
fn demo_read_by_a_reader_that_stops_early_ends_cleanly() {
    use std::io::{BufRead, BufReader};
    // `tenancy-demo | head -2`: the reader closes the pipe after two lines.
    let mut child = Command::new(env!("CARGO_BIN_EXE_tenancy-demo"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run tenancy-demo");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    for _ in 0..2 {
        lines.next().expect("a line").expect("read");
    }
    drop(lines);
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
}
