//! The splice's cost per transaction on its hot path, through the pure machine: queue an
//! explicit opening, write a prepared point read behind it, filter the replies. Prints
//! nanoseconds per transaction; for figures run it optimised:
//! `cargo test -p tenancy-sdk --release --lib wire::tests::timing -- --nocapture`.

use std::hint::black_box;
use std::time::Instant;

use super::*;

#[test]
fn opening_write_and_filter_per_transaction() {
    let (opening, n) = explicit_opening();
    let carrier = fe::run("s12");
    for (what, rows, iterations) in [
        ("point read, 1 row", 1, 20_000u32),
        ("100 rows of 100 B", 100, 2_000),
    ] {
        let replies: Vec<u8> = [
            be::bind_complete(),
            (0..rows)
                .flat_map(|_| be::row(&"v".repeat(if rows == 1 { 64 } else { 100 })))
                .collect(),
            be::complete("SELECT 1"),
            be::ready(b'T'),
        ]
        .concat();
        let server = [explicit_opening_replies(), replies.clone()].concat();
        let mut h = Harness::armed();
        let mut wbuf = Vec::with_capacity(4096);
        let mut buf = vec![0; server.len()];
        let mut reader = Reader::default();
        let mut out = Framer::default();
        let t = Instant::now();
        for _ in 0..iterations {
            h.m.queue(|b| {
                b.extend_from_slice(&opening);
                n
            });
            wbuf.clear();
            assert_eq!(
                h.m.write(&mut out, black_box(&carrier), &mut wbuf),
                Ok(true)
            );
            buf.copy_from_slice(&server);
            let kept = h.m.read(&mut reader, black_box(&mut buf)).expect("read");
            assert_eq!(&buf[..kept], &replies[..]);
        }
        let ns = t.elapsed().as_nanos() / u128::from(iterations);
        println!(
            "{what}: {ns} ns per transaction ({} B read, {} B written)",
            server.len(),
            wbuf.len()
        );
        assert!(h.m.skips().is_empty());
    }
}
