//! Unit tests of the splice's pure state machine: message builders, a harness that feeds
//! bytes through it in any chunking, and table-driven cases.

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::encode::{self, Enter, Opening};
use super::framer::{FrameError, Framer, MAX_LEN};
use super::machine::{Machine, Reader, MAX_DROPPED, SYNC};

mod assumptions;
mod cases;
mod prop;
mod secret;
mod timing;

/// One protocol message: type byte, length, body.
pub(super) fn msg(t: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![t];
    m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// Backend messages.
pub(super) mod be {
    use super::msg;

    pub(crate) fn parse_complete() -> Vec<u8> {
        msg(b'1', &[])
    }
    pub(crate) fn bind_complete() -> Vec<u8> {
        msg(b'2', &[])
    }
    pub(crate) fn close_complete() -> Vec<u8> {
        msg(b'3', &[])
    }
    pub(crate) fn no_data() -> Vec<u8> {
        msg(b'n', &[])
    }
    pub(crate) fn empty_query() -> Vec<u8> {
        msg(b'I', &[])
    }
    pub(crate) fn complete(tag: &str) -> Vec<u8> {
        let mut b = tag.as_bytes().to_vec();
        b.push(0);
        msg(b'C', &b)
    }
    /// A DataRow of one text value.
    pub(crate) fn row(v: &str) -> Vec<u8> {
        let mut b = 1u16.to_be_bytes().to_vec();
        b.extend_from_slice(&(v.len() as i32).to_be_bytes());
        b.extend_from_slice(v.as_bytes());
        msg(b'D', &b)
    }
    /// A RowDescription of one text column.
    pub(crate) fn row_description() -> Vec<u8> {
        let mut b = 1u16.to_be_bytes().to_vec();
        b.extend_from_slice(b"v\0");
        b.extend_from_slice(&[0; 6]);
        b.extend_from_slice(&25u32.to_be_bytes());
        b.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0]);
        msg(b'T', &b)
    }
    fn fields(t: u8, code: &str, message: &str) -> Vec<u8> {
        let mut b = Vec::new();
        for (k, v) in [(b'S', "ERROR"), (b'C', code), (b'M', message)] {
            b.push(k);
            b.extend_from_slice(v.as_bytes());
            b.push(0);
        }
        b.push(0);
        msg(t, &b)
    }
    pub(crate) fn error(message: &str) -> Vec<u8> {
        fields(b'E', "28000", message)
    }
    pub(crate) fn notice(message: &str) -> Vec<u8> {
        fields(b'N', "01000", message)
    }
    pub(crate) fn parameter_status(k: &str, v: &str) -> Vec<u8> {
        msg(b'S', format!("{k}\0{v}\0").as_bytes())
    }
    pub(crate) fn notification(channel: &str) -> Vec<u8> {
        let mut b = 7i32.to_be_bytes().to_vec();
        b.extend_from_slice(format!("{channel}\0payload\0").as_bytes());
        msg(b'A', &b)
    }
    pub(crate) fn ready(status: u8) -> Vec<u8> {
        msg(b'Z', &[status])
    }
}

/// Frontend messages, encoded as tokio-postgres encodes them.
pub(super) mod fe {
    use super::*;

    fn done(f: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
        let mut b = BytesMut::new();
        f(&mut b);
        b.to_vec()
    }
    /// A prepared statement's run: Bind, Execute, Sync.
    pub(crate) fn run(stmt: &str) -> Vec<u8> {
        done(|b| {
            let _ = frontend::bind(
                "",
                stmt,
                [],
                [] as [Option<&str>; 0],
                |_: Option<&str>, _| Ok(postgres_protocol::IsNull::Yes),
                [1i16],
                b,
            );
            let _ = frontend::execute("", 0, b);
            frontend::sync(b);
        })
    }
    /// A prepare: Parse, Describe, Sync.
    pub(crate) fn prepare(stmt: &str, sql: &str) -> Vec<u8> {
        done(|b| {
            let _ = frontend::parse(stmt, sql, [], b);
            let _ = frontend::describe(b'S', stmt, b);
            frontend::sync(b);
        })
    }
    /// A dropped statement's close: Close, Sync.
    pub(crate) fn close(stmt: &str) -> Vec<u8> {
        done(|b| {
            let _ = frontend::close(b'S', stmt, b);
            frontend::sync(b);
        })
    }
    pub(crate) fn query(sql: &str) -> Vec<u8> {
        done(|b| {
            let _ = frontend::query(sql, b);
        })
    }
}

/// Encodes with one of the machine's encoders.
pub(super) fn queued(f: impl FnOnce(&mut BytesMut) -> u32) -> (Vec<u8>, u32) {
    let mut b = BytesMut::new();
    let n = f(&mut b);
    (b.to_vec(), n)
}

/// A schema tenant's read-write opening: BEGIN, enter, search path (three statements).
pub(super) fn explicit_opening() -> (Vec<u8>, u32) {
    let o = Opening {
        commit_first: false,
        implicit: false,
        read_only: false,
        enter: Enter::Token("v1.k.t.1.2.3.mac"),
        search_path: Some("\"t_1\", public"),
    };
    queued(|b| encode::opening(&o, false, b))
}

/// The replies of [`explicit_opening`] when every statement succeeds.
pub(super) fn explicit_opening_replies() -> Vec<u8> {
    [
        be::bind_complete(),
        be::complete("BEGIN"),
        be::bind_complete(),
        be::row(""),
        be::complete("SELECT 1"),
        be::bind_complete(),
        be::row("\"t_1\", public"),
        be::complete("SELECT 1"),
    ]
    .concat()
}

/// The machine with both sides' framers, as `SpliceStream` drives it.
#[derive(Debug, Default)]
pub(super) struct Harness {
    pub(super) m: Machine,
    out: Framer,
    inn: Reader,
}

impl Harness {
    pub(super) fn armed() -> Self {
        let mut h = Harness::default();
        h.m.armed = true;
        h
    }

    /// Writes `bytes` from tokio-postgres in `chunks`; returns what goes to the socket.
    pub(super) fn write(&mut self, bytes: &[u8], chunks: &[usize]) -> Result<Vec<u8>, FrameError> {
        let mut wire = Vec::new();
        for c in split(bytes, chunks) {
            if !self.m.armed {
                // As `SpliceStream`: start-up passes unframed (its first message is untyped).
                wire.extend_from_slice(c);
                continue;
            }
            let mut wbuf = Vec::new();
            if self.m.write(&mut self.out, c, &mut wbuf)? {
                wire.extend_from_slice(&wbuf);
            } else {
                wire.extend_from_slice(c);
                let counts = self.out.count(c)?;
                self.m.wrote(counts);
            }
        }
        Ok(wire)
    }

    /// Reads `bytes` from the server in `chunks`; returns what tokio-postgres gets.
    pub(super) fn read(&mut self, bytes: &[u8], chunks: &[usize]) -> Result<Vec<u8>, FrameError> {
        let mut got = Vec::new();
        for c in split(bytes, chunks) {
            let mut c = c.to_vec();
            let kept = self.m.read(&mut self.inn, &mut c)?;
            got.extend_from_slice(&c[..kept]);
        }
        Ok(got)
    }

    pub(super) fn reader_at_boundary(&self) -> bool {
        self.inn.at_boundary()
    }
}

/// `bytes` cut after each of `cuts` (offsets, in any order; out of range ones ignored).
pub(super) fn split<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts
        .iter()
        .copied()
        .filter(|&c| c > 0 && c < bytes.len())
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = Vec::new();
    let mut at = 0;
    for c in cuts.into_iter().chain([bytes.len()]) {
        if c > at {
            out.push(&bytes[at..c]);
        }
        at = c;
    }
    out
}

/// The chunkings every stream is tested with: whole, cut once at every offset, one byte at
/// a time, and 50 random ones (seeded).
pub(super) fn chunkings(len: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut all = vec![vec![]];
    all.extend((1..len).map(|i| vec![i]));
    all.push((1..len).collect());
    let mut rng = StdRng::seed_from_u64(seed);
    for _ in 0..50 {
        let n = rng.gen_range(0..len.max(1));
        all.push((0..n).map(|_| rng.gen_range(0..len.max(1))).collect());
    }
    all
}

#[test]
fn malformed_backend_lengths_are_errors_not_panics() {
    for len in 0u32..4 {
        let mut bad = vec![b'D'];
        bad.extend_from_slice(&len.to_be_bytes());
        for chunks in chunkings(bad.len(), 1) {
            let mut h = Harness::armed();
            assert_eq!(
                h.read(&bad, &chunks),
                Err(FrameError::Length { kind: b'D', len }),
                "length {len}"
            );
        }
    }
    // Over the protocol's signed 32-bit limit, on a message that would be passed on.
    let mut h = Harness::armed();
    let huge = [b'D', 0x80, 0, 0, 0];
    assert_eq!(
        h.read(&huge, &[]),
        Err(FrameError::Length {
            kind: b'D',
            len: 0x8000_0000
        })
    );
}

#[test]
fn a_dropped_reply_longer_than_any_inserted_statement_sends_is_an_error() {
    // An inserted statement's DataRow announcing 1 GiB: the count is off, and dropping it
    // would swallow the carrier's replies.
    let mut h = Harness::armed();
    let (opening, n) = explicit_opening();
    h.m.queue(|b| {
        b.extend_from_slice(&opening);
        n
    });
    h.write(&fe::run("s1"), &[]).expect("write");
    let mut server = be::bind_complete();
    server.extend_from_slice(&[b'D', 0x40, 0, 0, 0]);
    assert_eq!(
        h.read(&server, &[3]),
        Err(FrameError::Length {
            kind: b'D',
            len: 0x4000_0000
        })
    );
    // Right at the limit is fine (and nothing is buffered: only the header is fed).
    let mut h = Harness::armed();
    h.m.queue(|b| {
        b.extend_from_slice(&opening);
        n
    });
    h.write(&fe::run("s1"), &[]).expect("write");
    let mut server = be::bind_complete();
    server.push(b'D');
    server.extend_from_slice(&MAX_DROPPED.to_be_bytes());
    assert_eq!(h.read(&server, &[]), Ok(vec![]));
    assert!(!h.reader_at_boundary());
}

#[test]
fn a_large_passed_on_message_is_streamed_without_buffering() {
    // A 1 GiB DataRow of the carrier's is valid: only its header is fed here, and it all
    // passes at once.
    let mut h = Harness::armed();
    let header = [b'D', 0x40, 0, 0, 0];
    assert_eq!(h.read(&header, &[1, 2]), Ok(header.to_vec()));
    assert!(!h.reader_at_boundary());
}

#[test]
fn malformed_frontend_lengths_are_errors() {
    let bad = [b'B', 0, 0, 0, 2];
    let mut f = Framer::default();
    assert_eq!(
        f.count(&bad),
        Err(FrameError::Length { kind: b'B', len: 2 })
    );
    let mut h = Harness::armed();
    h.m.queue(|b| {
        b.extend_from_slice(&SYNC);
        0
    });
    assert_eq!(
        h.write(&bad, &[]),
        Err(FrameError::Length { kind: b'B', len: 2 })
    );
    let mut f = Framer::default();
    let mut over = vec![b'Q'];
    over.extend_from_slice(&(MAX_LEN + 1).to_be_bytes());
    assert!(f.count(&over).is_err());
}

#[test]
fn nothing_is_inserted_or_filtered_before_arming() {
    let mut h = Harness::default();
    h.m.queue(|b| {
        b.extend_from_slice(&SYNC);
        1
    });
    let startup = [
        msg(b'R', &0u32.to_be_bytes()),
        msg(b'K', &[0, 0, 0, 42, 1, 2, 3, 4]),
        be::ready(b'I'),
    ]
    .concat();
    assert_eq!(
        h.write(&fe::query(""), &[]).as_deref(),
        Ok(&fe::query("")[..])
    );
    assert_eq!(h.read(&startup, &[3, 9]).as_deref(), Ok(&startup[..]));
    assert_eq!(h.m.key_pid(), Some(42));
    assert!(h.m.has_pending());
}

#[test]
fn after_copy_in_nothing_more_is_inserted() {
    // COPY FROM STDIN: the server ignores the Sync after Execute, so the count is off.
    let mut h = Harness::armed();
    let copy = [
        fe::run("s1"),
        msg(b'd', b"1\n"),
        msg(b'c', &[]),
        SYNC.to_vec(),
    ]
    .concat();
    h.write(&copy, &[]).expect("write");
    let replies = [
        be::bind_complete(),
        msg(b'G', &[0, 0, 0]),
        be::complete("COPY 1"),
        be::ready(b'I'),
    ]
    .concat();
    assert_eq!(h.read(&replies, &[]).as_deref(), Ok(&replies[..]));
    // Without an opening queued, requests still pass.
    assert_eq!(
        h.write(&fe::run("s1"), &[]).as_deref(),
        Ok(&fe::run("s1")[..])
    );
    let (opening, n) = explicit_opening();
    h.m.queue(|b| {
        b.extend_from_slice(&opening);
        n
    });
    assert_eq!(h.write(&fe::run("s1"), &[]), Err(FrameError::CopyIn));
}

#[test]
fn a_copy_refused_before_copy_mode_drops_the_extra_ready_for_query() {
    // Refused before copy-in mode, the server answers both Syncs; tokio-postgres expects
    // one ReadyForQuery, so the second (the CopyFail's Sync) is dropped, in any chunking.
    let copy = [fe::run("s1"), msg(b'f', b"\0"), SYNC.to_vec()].concat();
    let refused = [
        be::bind_complete(),
        be::error("COPY FROM not supported with row-level security"),
        be::ready(b'I'),
    ]
    .concat();
    let replies = [refused.clone(), be::notice("n"), be::ready(b'I')].concat();
    for chunks in chunkings(copy.len(), 7) {
        let mut h = Harness::armed();
        h.write(&copy, &chunks).expect("write");
        for read_chunks in chunkings(replies.len(), 8).iter().step_by(7) {
            let mut h2 = Harness::armed();
            h2.write(&copy, &chunks).expect("write");
            let got = h2.read(&replies, read_chunks).expect("read");
            assert_eq!(got, [refused.clone(), be::notice("n")].concat());
            assert!(h2.m.skips().is_empty());
            assert!(!h2.m.failed);
        }
        // The count holds: an opening after it is inserted and filtered as usual.
        h.read(&replies, &[]).expect("read");
        let (opening, n) = explicit_opening();
        h.m.queue(|b| {
            b.extend_from_slice(&opening);
            n
        });
        let run = fe::run("s1");
        assert_eq!(h.write(&run, &[]), Ok([opening, run.clone()].concat()));
        let carrier = [
            be::bind_complete(),
            be::complete("SELECT 0"),
            be::ready(b'I'),
        ]
        .concat();
        let server = [explicit_opening_replies(), carrier.clone()].concat();
        assert_eq!(h.read(&server, &[]), Ok(carrier));
    }
}

#[test]
fn split_covers_the_stream_in_order() {
    let b = [1u8, 2, 3, 4, 5];
    assert_eq!(
        split(&b, &[3, 1, 1, 9, 0]),
        vec![&b[..1], &b[1..3], &b[3..]]
    );
    assert_eq!(split(&b, &[]), vec![&b[..]]);
}
