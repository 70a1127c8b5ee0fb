//! What a PostgreSQL error says, in one line: tokio-postgres' own text for a server error
//! is only "db error", and the server's message, SQLSTATE, detail and hint are fields of
//! the error's source. [`pg_error_text`] formats one `tokio_postgres::Error`;
//! [`error_text`] (and [`ErrorText`], for log fields) formats any error and its causes,
//! with the PostgreSQL part spelled out wherever it is in the chain.
//!
//! For operators only (logs, workflow records, CLI messages): HTTP answers to tenants keep
//! their stable problem codes and never carry this text.

use std::error::Error as StdError;
use std::fmt;

/// One PostgreSQL error: for an error the server sent, `ERROR: <message> (SQLSTATE
/// <code>)` then `; detail: …`, `; hint: …` and `; where: …` when the server gave them;
/// for any other (connection closed, I/O, authentication), the error and its causes.
pub fn pg_error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!(
                "{}: {} (SQLSTATE {})",
                db.severity(),
                db.message(),
                db.code().code()
            );
            if let Some(d) = db.detail() {
                s.push_str("; detail: ");
                s.push_str(d);
            }
            if let Some(h) = db.hint() {
                s.push_str("; hint: ");
                s.push_str(h);
            }
            if let Some(w) = db.where_() {
                s.push_str("; where: ");
                s.push_str(&w.replace('\n', " / "));
            }
            s
        }
        None => {
            let mut s = e.to_string();
            let mut cause = e.source();
            while let Some(c) = cause {
                let t = c.to_string();
                if !s.contains(&t) {
                    s.push_str(": ");
                    s.push_str(&t);
                }
                cause = c.source();
            }
            s
        }
    }
}

/// An error and its causes on one line (`outer: inner: innermost`, like anyhow's `{:#}`),
/// with a `tokio_postgres::Error` anywhere in the chain replaced by [`pg_error_text`]. A
/// level whose text already ends with its cause's (`"{what}: {source}"`) or equals it
/// (a transparent wrapper) is not repeated, and neither is text already written.
pub fn error_text(e: &(dyn StdError + 'static)) -> String {
    let mut out = String::new();
    let push = |out: &mut String, t: &str| {
        if t.is_empty() || out.contains(t) {
            return;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(t);
    };
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(pg) = err.downcast_ref::<tokio_postgres::Error>() {
            let t = pg_error_text(pg);
            let already = pg
                .as_db_error()
                .is_some_and(|db| out.contains(db.message()));
            if !already {
                push(&mut out, &t);
            }
            break;
        }
        let text = err.to_string();
        let next = err.source();
        let own = match next.map(|n| n.to_string()) {
            Some(n) if n == text => String::new(),
            Some(n) => match text.strip_suffix(&n) {
                Some(head) => head.trim_end().trim_end_matches(':').trim_end().to_owned(),
                None => text,
            },
            None => text,
        };
        push(&mut out, &own);
        cur = next;
    }
    out
}

/// [`error_text`] as a `Display` value, for log fields: `error = %ErrorText(&e)`.
pub struct ErrorText<'a>(pub &'a (dyn StdError + 'static));

impl fmt::Display for ErrorText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&error_text(self.0))
    }
}

impl fmt::Debug for ErrorText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrap(&'static str, Box<dyn StdError + 'static>);
    impl fmt::Display for Wrap {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{}: {}", self.0, self.1)
        }
    }
    impl StdError for Wrap {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&*self.1)
        }
    }

    #[test]
    fn a_chain_without_postgres_reads_like_anyhow_without_repeats() {
        let io = std::io::Error::other("disk full");
        let e = Wrap("writing the ledger", Box::new(io));
        assert_eq!(error_text(&e), "writing the ledger: disk full");
        let e = Wrap("outer", Box::new(e));
        assert_eq!(error_text(&e), "outer: writing the ledger: disk full");
    }
}
