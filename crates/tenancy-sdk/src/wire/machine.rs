//! The splice's state machine, without I/O: where queued messages go into the frontend
//! stream, and which backend messages are replies to them. Bytes in, bytes out; the one
//! event, "an inserted statement failed", is [`Machine::failed`].
//!
//! The frontend side ([`Machine::write`], then [`Machine::wrote`] for bytes passed on
//! unchanged) and the backend side ([`Machine::read`]) each keep a [`Framer`] of their
//! own, outside the shared state, so the direct write path takes the lock only when a
//! Sync or Query went out.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use bytes::BytesMut;

use super::framer::{Capture, Counts, Fate, FrameError, Framer};

/// A Sync message.
pub(super) const SYNC: [u8; 5] = [b'S', 0, 0, 0, 4];
/// Start-up bytes kept to read the BackendKeyData from (authentication, parameter status
/// and the key come first; a server sends well under this).
const STARTUP_KEEP: usize = 64 * 1024;
/// The longest reply of an inserted statement the filter drops: they are BindComplete,
/// ParseComplete, short DataRows (`set_config`'s search path, `enter`'s void),
/// CommandComplete. A longer one means the count is off: an error rather than dropping a
/// message of the carrier's.
pub(super) const MAX_DROPPED: u32 = 64 * 1024;

/// Statements whose replies are dropped, starting after the `after_z`-th ReadyForQuery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Skip {
    pub(super) after_z: u64,
    /// Statements not yet complete.
    pub(super) left: u32,
    /// The insertion ended with a Sync of its own (its carrier was not an extended-protocol
    /// message): its ReadyForQuery is dropped too.
    pub(super) sync: bool,
    /// The statement whose DataRow is the next session secret, as the value of `left`
    /// while it runs (`tenancy.enter_session`).
    pub(super) secret_left: Option<u32>,
}

/// The state the stream (in the connection task) and the SDK (in `TenantTx`) share.
#[derive(Debug, Default)]
pub(super) struct Machine {
    /// Start-up is over: messages may be inserted and replies filtered.
    pub(super) armed: bool,
    /// Messages waiting to go in front of the next frontend message.
    pending: BytesMut,
    /// Statements in `pending`.
    pending_stmts: u32,
    /// Which of them (counted from the first) returns the next session secret.
    pending_secret: Option<u32>,
    /// The session secret the last `tenancy.enter_session` returned (or `init_session`,
    /// at connection set-up), not yet taken for an opening. Replaced by every DataRow of an
    /// inserted enter, even when the request that carried it then failed: the server
    /// rotated the secret in any case.
    secret: Option<i64>,
    /// Sync and Query messages written since arming.
    syncs_written: u64,
    /// ReadyForQuery messages read since arming.
    z_seen: u64,
    /// Inserted statements in flight, oldest first.
    skips: VecDeque<Skip>,
    /// An inserted statement failed since the last queueing.
    pub(super) failed: bool,
    /// Simple queries the SDK sent ahead of any later insertion (a deferred COMMIT sent
    /// without waiting) and not yet written: an insertion goes after them.
    pub(super) queries_ahead: u32,
    /// The server entered COPY FROM STDIN mode since arming (see [`FrameError::CopyIn`]).
    copy_in: bool,
    /// What the server sent before the splice was armed (start-up), to read the process
    /// id of its BackendKeyData.
    startup: Vec<u8>,
    /// Behind a transaction-mode pooler with single-use tokens: the captured DataRow is a
    /// pooled opening's, whose first column is the backend pid of the transaction (not a
    /// session secret), stored in `backend`.
    pub(super) capture_backend: bool,
    /// The backend pid of the transaction a pooled opening last entered (shared with the
    /// pool's watchdog).
    pub(super) backend: Arc<AtomicI32>,
}

/// The backend side's own state (the stream's, not shared).
#[derive(Debug, Clone)]
pub(super) struct Reader {
    framer: Framer,
    /// Whether the message being read is passed on.
    keep: bool,
    /// The body of a dropped DataRow that carries a session secret.
    capture: Capture,
}

impl Default for Reader {
    fn default() -> Self {
        Reader {
            framer: Framer::default(),
            keep: true,
            capture: Capture::default(),
        }
    }
}

impl Reader {
    /// Whether the stream read so far ends between two messages.
    #[cfg(test)]
    pub(super) fn at_boundary(&self) -> bool {
        self.framer.at_boundary()
    }
}

impl Machine {
    /// Queues messages in front of the next frontend message: `encode` appends them and
    /// returns how many statements (counted replies) they hold.
    pub(super) fn queue(&mut self, encode: impl FnOnce(&mut BytesMut) -> u32) {
        self.queue_with_secret(encode, None);
    }

    /// Like [`Machine::queue`]; `secret_at`: which of the queued statements (from 0)
    /// returns the next session secret, a DataRow of one int8 in text.
    pub(super) fn queue_with_secret(
        &mut self,
        encode: impl FnOnce(&mut BytesMut) -> u32,
        secret_at: Option<u32>,
    ) {
        let before = self.pending_stmts;
        let n = encode(&mut self.pending);
        if let Some(i) = secret_at.filter(|&i| i < n) {
            self.pending_secret = Some(before + i);
        }
        self.pending_stmts += n;
        self.failed = false;
    }

    /// Takes the session secret for the next opening (each works once).
    pub(super) fn take_secret(&mut self) -> Option<i64> {
        self.secret.take()
    }

    /// Whether a session secret is there for the next opening.
    pub(super) fn has_secret(&self) -> bool {
        self.secret.is_some()
    }

    /// The first session secret, from `tenancy.init_session` at connection set-up.
    pub(super) fn set_secret(&mut self, secret: i64) {
        self.secret = Some(secret);
    }

    /// Inserted statements in flight (for tests).
    #[cfg(test)]
    pub(super) fn skips(&self) -> &VecDeque<Skip> {
        &self.skips
    }

    /// Whether messages are queued and not yet written.
    #[cfg(test)]
    pub(super) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// A write of `buf` from tokio-postgres. When queued messages go into it, appends
    /// `buf` with them inserted to `wbuf` and returns true: all of `buf` is then taken.
    /// Otherwise returns false and leaves `out` as it was: the caller writes `buf` as it
    /// is, then reports what went out with [`Framer::count`] and [`Machine::wrote`].
    pub(super) fn write(
        &mut self,
        out: &mut Framer,
        buf: &[u8],
        wbuf: &mut Vec<u8>,
    ) -> Result<bool, FrameError> {
        if !self.armed || self.pending.is_empty() {
            return Ok(false);
        }
        if self.copy_in {
            return Err(FrameError::CopyIn);
        }
        // The queued messages go in front of the first message that starts in `buf` (the
        // rest of a message begun in an earlier write comes first), after any simple
        // query sent ahead of them, and after any Close with its Sync: tokio-postgres
        // closes a dropped statement with a request of its own, which it may write just
        // before the statement the opening belongs to. In front of it the opening would
        // end at the Close's Sync: an implicit transaction (and its context) before its
        // statement ran, a refusal reported to the Close.
        let mut ahead = self.queries_ahead;
        let mut after_close = out.last == b'C';
        let mut at = None;
        out.clone().walk(buf, |pos, t| {
            let close = t == b'C' || (t == b'S' && after_close);
            after_close = t == b'C';
            if ahead == 0 && !close {
                at = Some((pos, t));
                return false;
            }
            if t == b'Q' {
                ahead -= 1;
            }
            true
        })?;
        let Some((pos, carrier)) = at else {
            return Ok(false);
        };
        // An extended-protocol carrier ends with a Sync the insertion shares. Anything
        // else (a simple Query, above all) gets a Sync after the insertion: after an error
        // the server skips to the next Sync, which a Query does not end.
        let sync = !matches!(carrier, b'P' | b'B' | b'D' | b'E' | b'C' | b'H' | b'S');
        // The inserted messages are whole: `out` frames tokio-postgres' bytes alone.
        let before = out.count(&buf[..pos])?;
        let rest = out.count(&buf[pos..])?;
        let stmts = std::mem::take(&mut self.pending_stmts);
        let secret_left = self.pending_secret.take().map(|i| stmts - i);
        // In stream order, so that skips stay ordered by `after_z`.
        self.wrote(before);
        if stmts > 0 || sync {
            self.skips.push_back(Skip {
                after_z: self.syncs_written,
                left: stmts,
                sync,
                secret_left,
            });
        }
        wbuf.extend_from_slice(&buf[..pos]);
        wbuf.extend_from_slice(&self.pending);
        self.pending.clear();
        if sync {
            wbuf.extend_from_slice(&SYNC);
        }
        wbuf.extend_from_slice(&buf[pos..]);
        self.syncs_written += u64::from(sync);
        self.wrote(rest);
        Ok(true)
    }

    /// Sync and Query messages (and CopyFail) tokio-postgres wrote.
    pub(super) fn wrote(&mut self, c: Counts) {
        if let (Some(before), false) = (c.copy_fail, self.copy_in) {
            // A COPY FROM STDIN the server refused before copy-in mode: tokio-postgres
            // still ends it with CopyFail and a second Sync, which the server (out of
            // copy mode) answers with a ReadyForQuery tokio-postgres does not expect, and
            // would hand to its next request. That one is dropped here. (In copy-in mode,
            // after CopyInResponse, the server ignored the first Sync instead.)
            self.skips.push_back(Skip {
                after_z: self.syncs_written + before,
                left: 0,
                sync: true,
                secret_left: None,
            });
        }
        self.syncs_written += c.syncs;
        self.queries_ahead = self.queries_ahead.saturating_sub(c.queries);
    }

    /// Bytes read from the server, filtered in place: returns how many of the first bytes
    /// of `bytes` go on to tokio-postgres. Before arming everything passes (and start-up is
    /// kept for [`Machine::key_pid`]).
    pub(super) fn read(&mut self, inn: &mut Reader, bytes: &mut [u8]) -> Result<usize, FrameError> {
        if !self.armed {
            let room = STARTUP_KEEP.saturating_sub(self.startup.len());
            self.startup
                .extend_from_slice(&bytes[..bytes.len().min(room)]);
            inn.framer.walk(bytes, |_, _| true)?;
            return Ok(bytes.len());
        }
        let kept = inn
            .framer
            .filter(bytes, &mut inn.keep, &mut inn.capture, MAX_DROPPED, |t| {
                self.keep_reply(t)
            })?;
        if let Some((body, whole)) = inn.capture.ended() {
            if self.capture_backend {
                // A pooled opening's row: its first column is the backend's pid.
                if let Some(pid) = first_int_of_data_row(body).and_then(|v| i32::try_from(v).ok()) {
                    self.backend.store(pid, Ordering::Relaxed);
                }
            } else {
                // A secret that cannot be read is no secret: the next opening on this
                // connection then has none, and the SDK retires it.
                self.secret = if whole {
                    secret_of_data_row(body)
                } else {
                    None
                };
            }
        }
        Ok(kept)
    }

    /// What becomes of a backend message starting with type byte `t`: passed on to
    /// tokio-postgres, dropped, or dropped and read (the DataRow with the next secret).
    fn keep_reply(&mut self, t: u8) -> Fate {
        match self.reply(t) {
            true => Fate::Keep,
            false => match self.skips.front() {
                Some(k) if t == b'D' && k.secret_left.is_some_and(|s| s == k.left) => Fate::Capture,
                _ => Fate::Drop,
            },
        }
    }

    /// Whether a backend message starting with type byte `t` goes on to tokio-postgres.
    fn reply(&mut self, t: u8) -> bool {
        let z_seen = self.z_seen;
        let Some(front) = self.skips.front_mut().filter(|k| z_seen >= k.after_z) else {
            match t {
                b'Z' => self.z_seen += 1,
                // CopyInResponse, CopyBothResponse.
                b'G' | b'W' => self.copy_in = true,
                _ => {}
            }
            return true;
        };
        match t {
            // Notice, parameter status, notification: asynchronous, never a reply.
            b'N' | b'S' | b'A' => true,
            // An inserted statement failed. The server skips to the next Sync: the inserted
            // one (whose ReadyForQuery is still dropped), or the carrier's, which makes this
            // error the carrier's reply.
            b'E' => {
                self.failed = true;
                if front.sync {
                    front.left = 0;
                } else {
                    self.skips.pop_front();
                }
                true
            }
            b'Z' => {
                self.z_seen += 1;
                let own = front.sync && front.left == 0;
                self.skips.pop_front();
                // The inserted Sync's ReadyForQuery is dropped; no other can come before the
                // inserted statements complete (kept, to be safe).
                !own
            }
            // ParseComplete, CommandComplete, EmptyQueryResponse, PortalSuspended end a
            // statement.
            b'1' | b'C' | b'I' | b's' if front.left > 0 => {
                front.left -= 1;
                if front.left == 0 && !front.sync {
                    self.skips.pop_front();
                }
                false
            }
            // BindComplete, DataRow, RowDescription, NoData, ParameterDescription.
            _ => false,
        }
    }

    /// The process id the server gave in its BackendKeyData at start-up, if it sent one.
    pub(super) fn key_pid(&self) -> Option<i32> {
        let mut rest = self.startup.as_slice();
        while rest.len() >= 5 {
            let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            let end = 1 + len;
            if len < 4 || rest.len() < end {
                return None;
            }
            if rest[0] == b'K' && len >= 8 {
                return Some(i32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]));
            }
            rest = &rest[end..];
        }
        None
    }
}

/// The integer in the first column of a DataRow body (text format), whatever follows it.
/// The body may be cut short after that column.
fn first_int_of_data_row(body: &[u8]) -> Option<i64> {
    let (cols, rest) = body.split_first_chunk::<2>()?;
    let (len, rest) = rest.split_first_chunk::<4>()?;
    let len = usize::try_from(i32::from_be_bytes(*len)).ok()?;
    if u16::from_be_bytes(*cols) == 0 || rest.len() < len {
        return None;
    }
    std::str::from_utf8(&rest[..len]).ok()?.parse().ok()
}

/// The int8 in a DataRow body of one text column (`tenancy.enter_session`'s result), if it
/// is exactly that.
fn secret_of_data_row(body: &[u8]) -> Option<i64> {
    let (cols, rest) = body.split_first_chunk::<2>()?;
    let (len, value) = rest.split_first_chunk::<4>()?;
    if u16::from_be_bytes(*cols) != 1 || i32::from_be_bytes(*len) != value.len() as i32 {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}
