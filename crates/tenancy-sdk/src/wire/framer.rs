//! Message framing of one direction of the protocol stream: a type byte, then a
//! big-endian length that counts itself (four bytes) and the body. Pure: bytes in,
//! message starts out; any split of the stream into reads or writes frames the same.

/// Why the splice cannot go on with a connection's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FrameError {
    /// A length field the protocol does not allow: fewer than the four bytes of the length
    /// itself, or more than the largest message this direction may carry.
    #[error("malformed protocol message: type {:?}, length {len}", char::from(*.kind))]
    Length {
        /// The message's type byte.
        kind: u8,
        /// Its length field.
        len: u32,
    },
    /// The server entered COPY FROM STDIN mode, in which it ignores the Sync
    /// tokio-postgres wrote after the COPY's Execute: replies can no longer be matched to
    /// requests by counting, so nothing more is inserted on this connection.
    #[error(
        "the connection ran COPY FROM STDIN, after which it cannot carry transaction openings"
    )]
    CopyIn,
}

/// The largest length field of any message: the protocol's lengths are signed 32-bit.
pub(super) const MAX_LEN: u32 = i32::MAX as u32;

/// Messages that each end with a ReadyForQuery (Sync and Query), Queries among them, and
/// where a CopyFail went.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Counts {
    pub(super) syncs: u64,
    pub(super) queries: u32,
    /// Sync and Query messages before the last CopyFail among these bytes, if any.
    pub(super) copy_fail: Option<u64>,
}

/// What becomes of a backend message the filter meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    /// Passed on to tokio-postgres.
    Keep,
    /// Dropped (a reply to an inserted statement).
    Drop,
    /// Dropped, its body kept in a [`Capture`] (the DataRow with the next session secret).
    Capture,
}

/// The body of the last captured message, up to [`Capture::ROOM`] bytes (a DataRow of one
/// int8 in text is 26; a pooled opening's backend pid is its first column): nothing longer
/// is ever needed, and nothing is allocated.
#[derive(Debug, Clone, Default)]
pub(super) struct Capture {
    /// A captured message is being read.
    active: bool,
    buf: [u8; Capture::ROOM],
    len: usize,
    /// The message was longer than the room (its body is then useless).
    overflow: bool,
    /// A captured message ended and was not taken yet.
    done: bool,
}

impl Capture {
    const ROOM: usize = 32;

    fn start(&mut self) {
        self.active = true;
        self.len = 0;
        self.overflow = false;
        self.done = false;
    }

    fn take(&mut self, bytes: &[u8]) {
        let room = Self::ROOM - self.len;
        if bytes.len() > room {
            self.overflow = true;
        }
        let n = bytes.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    fn finish(&mut self) {
        if self.active {
            self.active = false;
            self.done = true;
        }
    }

    /// The body of a captured message that ended since the last call: its first
    /// [`Capture::ROOM`] bytes, and whether that is all of it.
    pub(super) fn ended(&mut self) -> Option<(&[u8], bool)> {
        if !std::mem::take(&mut self.done) {
            return None;
        }
        Some((&self.buf[..self.len], !self.overflow))
    }
}

/// Frames a byte stream into protocol messages, calling back at each message start.
#[derive(Debug, Default, Clone)]
pub(super) struct Framer {
    /// Type byte of the last message that started.
    pub(super) last: u8,
    /// Header bytes seen of the current message (0 at a boundary or in a body).
    got: usize,
    len: [u8; 4],
    /// Body bytes still to come.
    left: usize,
}

impl Framer {
    /// Whether the stream so far ends between two messages.
    #[cfg(test)]
    pub(super) fn at_boundary(&self) -> bool {
        self.got == 0 && self.left == 0
    }

    /// Walks `bytes`; `fate(type)` is asked at each message start what becomes of it, and
    /// kept bytes are compacted to the front (in place: no copy while everything is kept).
    /// A message not kept may be at most `max_dropped` bytes long; a captured one is
    /// dropped and its body copied into `capture`. Returns how many bytes were kept.
    pub(super) fn filter(
        &mut self,
        bytes: &mut [u8],
        keep_current: &mut bool,
        capture: &mut Capture,
        max_dropped: u32,
        mut fate: impl FnMut(u8) -> Fate,
    ) -> Result<usize, FrameError> {
        let mut decide = |t: u8, keep_current: &mut bool, capture: &mut Capture| {
            let f = fate(t);
            *keep_current = f == Fate::Keep;
            if f == Fate::Capture {
                capture.start();
            }
        };
        let (mut r, mut w) = (0, 0);
        while r < bytes.len() {
            if self.left > 0 {
                let n = self.left.min(bytes.len() - r);
                if *keep_current {
                    if w != r {
                        bytes.copy_within(r..r + n, w);
                    }
                    w += n;
                } else if capture.active {
                    capture.take(&bytes[r..r + n]);
                }
                r += n;
                self.left -= n;
                if self.left == 0 {
                    capture.finish();
                }
                continue;
            }
            if self.got == 0 && bytes.len() - r >= 5 {
                // A whole header at hand (the common case): one step instead of five.
                let t = bytes[r];
                decide(t, keep_current, capture);
                self.last = t;
                let len =
                    u32::from_be_bytes([bytes[r + 1], bytes[r + 2], bytes[r + 3], bytes[r + 4]]);
                let limit = if *keep_current { MAX_LEN } else { max_dropped };
                if !(4..=limit).contains(&len) {
                    return Err(FrameError::Length { kind: t, len });
                }
                if *keep_current {
                    if w != r {
                        bytes.copy_within(r..r + 5, w);
                    }
                    w += 5;
                }
                r += 5;
                self.left = len as usize - 4;
                if self.left == 0 {
                    capture.finish();
                }
                continue;
            }
            let b = bytes[r];
            let limit = if self.got == 0 || *keep_current {
                MAX_LEN
            } else {
                max_dropped
            };
            self.header_byte(b, limit, |t| decide(t, keep_current, capture))?;
            if *keep_current {
                bytes[w] = b;
                w += 1;
            }
            r += 1;
            if self.got == 0 && self.left == 0 {
                // A message without a body ended with its header.
                capture.finish();
            }
        }
        Ok(w)
    }

    /// Walks `bytes` from this state; `on_start(offset, type)` runs at each message start
    /// and may stop the walk there by returning false (the state is then at that start).
    pub(super) fn walk(
        &mut self,
        bytes: &[u8],
        mut on_start: impl FnMut(usize, u8) -> bool,
    ) -> Result<(), FrameError> {
        let mut r = 0;
        while r < bytes.len() {
            if self.left > 0 {
                let k = self.left.min(bytes.len() - r);
                r += k;
                self.left -= k;
                continue;
            }
            if self.got == 0 && !on_start(r, bytes[r]) {
                return Ok(());
            }
            self.header_byte(bytes[r], MAX_LEN, |_| {})?;
            r += 1;
        }
        Ok(())
    }

    /// Walks `bytes`; returns how many Sync and how many Query messages start in them.
    pub(super) fn count(&mut self, bytes: &[u8]) -> Result<Counts, FrameError> {
        let mut c = Counts::default();
        self.walk(bytes, |_, t| {
            match t {
                b'S' => c.syncs += 1,
                b'Q' => {
                    c.syncs += 1;
                    c.queries += 1;
                }
                b'f' => c.copy_fail = Some(c.syncs),
                _ => {}
            }
            true
        })?;
        Ok(c)
    }

    /// Takes one header byte; `on_start(type)` runs at a message's first byte. A length
    /// under 4 or over `limit` is an error, after which the stream cannot be framed.
    fn header_byte(
        &mut self,
        b: u8,
        limit: u32,
        on_start: impl FnOnce(u8),
    ) -> Result<(), FrameError> {
        if self.got == 0 {
            self.last = b;
            on_start(b);
        } else {
            self.len[self.got - 1] = b;
        }
        if self.got == 4 {
            let len = u32::from_be_bytes(self.len);
            if !(4..=limit).contains(&len) {
                return Err(FrameError::Length {
                    kind: self.last,
                    len,
                });
            }
            self.left = len as usize - 4;
            self.got = 0;
        } else {
            self.got += 1;
        }
        Ok(())
    }
}
