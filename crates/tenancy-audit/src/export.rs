//! Export of one tenant's log as JSON lines, with what an offline check needs.

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;
use uuid::Uuid;

use crate::chain::StoredEvent;
use crate::checkpoint::{load_anchors, load_checkpoints, Checkpoint};
use crate::log::Log;
use crate::verify::load_events;
use crate::Error;

/// The export format's name, in its header line.
pub(crate) const FORMAT: &str = "tenancy-audit-export-v1";

/// One line of an export.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Line {
    /// The first line.
    Header {
        format: String,
        tenant: Uuid,
        exported_at_us: i64,
        /// The public keys of the checkpoints in the export (hex).
        public_keys: Vec<String>,
    },
    Event(Box<StoredEvent>),
    Checkpoint(Checkpoint),
    /// A purge boundary the remaining chain starts after.
    Anchor(Checkpoint),
}

/// A parsed export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// The tenant.
    pub tenant: Uuid,
    /// Its events.
    pub events: Vec<StoredEvent>,
    /// Its checkpoints.
    pub checkpoints: Vec<Checkpoint>,
    /// The anchors of its purges.
    pub anchors: Vec<Checkpoint>,
    /// The public keys the export names.
    pub public_keys: Vec<String>,
}

/// Writes one tenant's events (with their hashes), its checkpoints (the catalog's plus
/// `extra`) and the public keys as JSON lines to `out`. Returns the number of events.
pub async fn export(
    owner: &Client,
    catalog: Option<&Client>,
    tenant: Uuid,
    extra: &[Checkpoint],
    out: &mut dyn Write,
) -> Result<u64, Error> {
    let events = load_events(owner, tenant).await?;
    let (mut checkpoints, anchors) = match catalog {
        Some(c) => (
            load_checkpoints(c, Some(tenant)).await?,
            load_anchors(c, Log::Tenant, Some(tenant)).await?,
        ),
        None => (Vec::new(), Vec::new()),
    };
    checkpoints.extend(extra.iter().filter(|c| c.tenant == tenant).cloned());
    checkpoints.sort_by(|a, b| (a.chain_pos, &a.public_key).cmp(&(b.chain_pos, &b.public_key)));
    checkpoints.dedup();
    let mut public_keys: Vec<String> = checkpoints.iter().map(|c| c.public_key.clone()).collect();
    public_keys.sort();
    public_keys.dedup();
    let io = |source| Error::Io {
        what: "writing the export to",
        path: "its output".into(),
        source,
    };
    let mut put = |line: &Line| -> Result<(), Error> {
        let s = serde_json::to_string(line).map_err(|e| Error::Format(e.to_string()))?;
        writeln!(out, "{s}").map_err(io)
    };
    put(&Line::Header {
        format: FORMAT.into(),
        tenant,
        exported_at_us: (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as i64,
        public_keys,
    })?;
    let n = events.len() as u64;
    for e in events {
        put(&Line::Event(Box::new(e)))?;
    }
    for c in checkpoints {
        put(&Line::Checkpoint(c))?;
    }
    for a in anchors {
        put(&Line::Anchor(a))?;
    }
    Ok(n)
}

/// Reads an export written by [`export`].
pub fn read_export(input: &mut dyn BufRead) -> Result<Export, Error> {
    let mut header: Option<(Uuid, Vec<String>)> = None;
    let (mut events, mut checkpoints, mut anchors) = (Vec::new(), Vec::new(), Vec::new());
    for (i, line) in input.lines().enumerate() {
        let line = line.map_err(|source| Error::Io {
            what: "reading the export from",
            path: "its input".into(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: Line = serde_json::from_str(&line)
            .map_err(|e| Error::Format(format!("export line {}: {e}", i + 1)))?;
        match parsed {
            Line::Header {
                format,
                tenant,
                public_keys,
                ..
            } => {
                if format != FORMAT {
                    return Err(Error::Format(format!(
                        "export line {}: format {format:?} is not {FORMAT}",
                        i + 1
                    )));
                }
                if header.is_some() {
                    return Err(Error::Format(format!(
                        "export line {}: a second header",
                        i + 1
                    )));
                }
                header = Some((tenant, public_keys));
            }
            Line::Event(e) => events.push(*e),
            Line::Checkpoint(c) => checkpoints.push(c),
            Line::Anchor(a) => anchors.push(a),
        }
    }
    let (tenant, public_keys) =
        header.ok_or_else(|| Error::Format("the export has no header line".into()))?;
    if let Some(e) = events.iter().find(|e| e.tenant != tenant) {
        return Err(Error::Format(format!(
            "the export is for tenant {tenant} but holds an event (seq {}) of tenant {}",
            e.seq, e.tenant
        )));
    }
    Ok(Export {
        tenant,
        events,
        checkpoints,
        anchors,
        public_keys,
    })
}
