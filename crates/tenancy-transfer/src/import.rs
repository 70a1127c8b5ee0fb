//! Import: an archive into an existing, active, empty tenant, in one transaction.

use std::collections::BTreeMap;

use futures_util::StreamExt;
use tenancy_core::{Placement, TenantId};
use tenancy_sdk::{ClusterAccess, Router, TenantTx};
use tokio::io::AsyncRead;
use tokio_postgres::Client;

use crate::export::app_version;
use crate::format::{
    copy_unescape, AppVersion, ArchiveReader, Header, Item, RowChecksum, Source, Summary, TableDef,
    TableSummary, SESSION_SETTINGS,
};
use crate::tables::{self, Table};
use crate::{Error, Progress};

/// An archive that passed every check of the reader.
#[derive(Debug, Clone)]
pub struct Verified {
    /// Its header.
    pub header: Header,
    /// Its summary.
    pub summary: Summary,
    /// Its size.
    pub bytes: u64,
}

/// Reads a whole archive and checks it (framing, every table's count and checksum, the
/// summary and the file's digest) without touching any database: run it before creating
/// anything for an import, so that a damaged file is refused while nothing exists yet.
pub async fn verify_archive<R: AsyncRead + Unpin>(
    input: R,
    progress: &dyn Progress,
) -> Result<Verified, Error> {
    let (mut reader, header) = ArchiveReader::open(input).await?;
    loop {
        let item = reader.next().await?;
        progress.bytes(reader.bytes_read());
        match item {
            Item::Table(name) => progress.table(&name),
            Item::Rows(text) => progress.rows(text.matches('\n').count() as u64),
            Item::TableDone(_) => {}
            Item::End(summary) => {
                return Ok(Verified {
                    header,
                    summary,
                    bytes: reader.bytes_read(),
                })
            }
        }
    }
}

/// What an import loaded.
#[derive(Debug, Clone)]
pub struct ImportSummary {
    /// The tenant the archive came from.
    pub source: Source,
    /// The app version of the archive.
    pub from_version: i32,
    /// The app version of the target's storage.
    pub to_version: i32,
    /// Each table's count and checksum, read back from the target after loading.
    pub tables: Vec<TableSummary>,
    /// Identity or serial sequences raised past the imported keys.
    pub sequences_raised: u64,
}

impl std::fmt::Display for ImportSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "imported {} rows of tenant {} ({}) from app version {} into version {}; every table verified by count and checksum",
            self.tables.iter().map(|t| t.rows).sum::<u64>(),
            self.source.slug,
            self.source.tenant,
            self.from_version,
            self.to_version
        )?;
        write!(f, "{}", crate::Tables(&self.tables))
    }
}

/// How one archive table goes into its target table.
#[derive(Debug)]
struct Plan {
    target: Table,
    /// The INSERT of one batch (a JSON array of rows as `$1`).
    insert: String,
    /// The COPY that reads the loaded rows back as the archive wrote them: the target's
    /// columns the archive does not have (added by a newer migration) left out.
    read_back: String,
}

/// Matches the archive's app version and tables with the target's. Refuses an archive of
/// another app (a migration with another checksum), of a newer version, and one whose
/// tables or columns the target lacks or types differently; an older archive whose tables
/// are all there is accepted: columns added since take their defaults.
fn plan(
    header: &Header,
    target_app: &AppVersion,
    target: Vec<Table>,
) -> Result<BTreeMap<String, Plan>, Error> {
    let have = &header.app;
    if have.version > target_app.version {
        return Err(Error::Incompatible(format!(
            "the archive is at app version {} and this tenant's storage at version {}: apply the app's migrations up to version {} here first (`tenancy migrate --dir …` with the newer release's migrations), then import again",
            have.version, target_app.version, have.version
        )));
    }
    for m in &have.migrations {
        match target_app.migrations.iter().find(|t| t.version == m.version) {
            Some(t) if t.checksum == m.checksum => {}
            Some(t) => {
                return Err(Error::Incompatible(format!(
                    "app migration {} is {:?} (checksum {}) in the archive but {:?} (checksum {}) here: the archive comes from another app or another history of it; import it into a deployment of the same app",
                    m.version, m.name, m.checksum, t.name, t.checksum
                )))
            }
            None => {
                return Err(Error::Incompatible(format!(
                    "app migration {} ({:?}) of the archive was never applied here: import it into a deployment of the same app",
                    m.version, m.name
                )))
            }
        }
    }
    let mut by_name: BTreeMap<String, Table> = target
        .into_iter()
        .map(|t| (t.def.name.clone(), t))
        .collect();
    let mut plans = BTreeMap::new();
    for def in &header.tables {
        let target = by_name.remove(&def.name).ok_or_else(|| {
            Error::Incompatible(format!(
                "table {:?} of the archive is not a tenant table here (app version {}): it was dropped or renamed by a later migration; export it again from a deployment at this version",
                def.name, target_app.version
            ))
        })?;
        plans.insert(def.name.clone(), plan_table(def, target)?);
    }
    Ok(plans)
}

fn plan_table(def: &TableDef, target: Table) -> Result<Plan, Error> {
    for c in &def.columns {
        match target.def.columns.iter().find(|t| t.name == c.name) {
            Some(t) if t.type_name == c.type_name => {}
            Some(t) => {
                return Err(Error::Incompatible(format!(
                    "column {}.{} is {} in the archive but {} here: a later migration changed its type; export it again from a deployment at this version",
                    def.name, c.name, c.type_name, t.type_name
                )))
            }
            None => {
                return Err(Error::Incompatible(format!(
                    "column {}.{} of the archive does not exist here: a later migration dropped or renamed it; export it again from a deployment at this version",
                    def.name, c.name
                )))
            }
        }
    }
    let cols: Vec<String> = def
        .columns
        .iter()
        .filter(|c| !target.generated.contains(&c.name))
        .map(|c| tenancy_conn::quote_ident(&c.name))
        .collect();
    if cols.is_empty() {
        return Err(Error::Refused(format!(
            "table {:?} has no column to insert besides tenant_id",
            def.name
        )));
    }
    let cols = cols.join(", ");
    let insert = format!(
        "INSERT INTO {q} ({cols}) OVERRIDING SYSTEM VALUE SELECT {cols} FROM jsonb_populate_recordset(NULL::{q}, $1::text::jsonb)",
        q = target.qualified
    );
    let added: Vec<String> = target
        .def
        .columns
        .iter()
        .filter(|t| !def.columns.iter().any(|c| c.name == t.name))
        .map(|t| tenancy_conn::quote_literal(&t.name))
        .collect();
    let minus = if added.is_empty() {
        String::new()
    } else {
        format!(" - ARRAY[{}]::text[]", added.join(", "))
    };
    let read_back = format!(
        "COPY (SELECT (to_jsonb(r) - 'tenant_id'{minus})::text FROM {} r) TO STDOUT",
        target.qualified
    );
    Ok(Plan {
        target,
        insert,
        read_back,
    })
}

/// Imports an archive into `tenant`, which must exist, be active and hold no rows in any
/// tenant table; its placement may be any. Everything happens in one transaction of the
/// tenant's own (runtime role, signed context, row-level security forced):
///
/// 1. the archive's app version and tables are matched with the target's (see the
///    refusals of [`Error::Incompatible`]); the tenant must hold no rows;
/// 2. each table's rows are inserted in batches (one JSON array of rows a statement,
///    `jsonb_populate_recordset`); `tenant_id` is not in the archive and takes the
///    context's tenant, and the policies' `WITH CHECK` refuses any other;
/// 3. each table is read back and its count and checksum compared with the archive's;
/// 4. the archive's end is reached: its summary and digest verified;
/// 5. identity and serial sequences of the target are raised past the largest imported
///    value (as the owner: the runtime role may not; raising never lowers, and a
///    sequence raised for an import that then fails only leaves a gap);
/// 6. commit.
///
/// Any failure before the commit rolls the whole transaction back: the tenant keeps no
/// row of the archive. `access` holds the owner login for step 5.
pub async fn import<R: AsyncRead + Unpin>(
    router: &Router,
    catalog: &Client,
    access: &ClusterAccess,
    tenant: TenantId,
    input: R,
    progress: &dyn Progress,
) -> Result<ImportSummary, Error> {
    let (mut reader, header) = ArchiveReader::open(input).await?;
    let t = tenancy_catalog::get_tenant(catalog, tenant).await?;
    let target_app = app_version(catalog, &t).await?;
    let mut tx = router.begin(tenant).await?;
    let loaded = load(&mut tx, &mut reader, &header, &target_app, progress).await;
    let (tables, bumps) = match loaded {
        Ok(l) => l,
        Err(e) => {
            // Rolled back on drop as well; an explicit rollback releases it now.
            let _ = tx.rollback().await;
            return Err(e);
        }
    };
    let raised = if bumps.is_empty() {
        Ok(0)
    } else {
        raise_sequences(catalog, access, &t, &bumps).await
    };
    let sequences_raised = match raised {
        Ok(n) => n,
        Err(e) => {
            let _ = tx.rollback().await;
            return Err(e);
        }
    };
    tx.commit().await?;
    Ok(ImportSummary {
        source: header.source,
        from_version: header.app.version,
        to_version: target_app.version,
        tables,
        sequences_raised,
    })
}

type Loaded = (Vec<TableSummary>, Vec<(String, i64)>);

async fn load<R: AsyncRead + Unpin>(
    tx: &mut TenantTx,
    reader: &mut ArchiveReader<R>,
    header: &Header,
    target_app: &AppVersion,
    progress: &dyn Progress,
) -> Result<Loaded, Error> {
    tx.batch_execute(SESSION_SETTINGS).await?;
    let target = tables::tenant_tables(tx).await?;
    for t in &target {
        let sql = format!("SELECT EXISTS (SELECT 1 FROM {})", t.qualified);
        if tx.query_one(sql.as_str(), &[]).await?.get::<_, bool>(0) {
            return Err(Error::Refused(format!(
                "tenant {} already has rows in table {}: import into a new, empty tenant",
                tx.tenant(),
                t.def.name
            )));
        }
    }
    let plans = plan(header, target_app, target)?;
    let mut current: Option<&Plan> = None;
    let mut tables = Vec::new();
    let mut bumps = Vec::new();
    let mut array = String::new();
    loop {
        let item = reader.next().await?;
        progress.bytes(reader.bytes_read());
        match item {
            Item::Table(name) => {
                progress.table(&name);
                current = plans.get(&name);
            }
            Item::Rows(text) => {
                let p = current.ok_or_else(|| Error::Corrupt("rows outside a table".into()))?;
                let lines = &text[..text.len() - 1];
                array.clear();
                array.push('[');
                let mut n = 0u64;
                for line in lines.split('\n') {
                    if n > 0 {
                        array.push(',');
                    }
                    array.push_str(line);
                    n += 1;
                }
                array.push(']');
                let inserted = tx
                    .execute(p.insert.as_str(), &[&array.as_str()])
                    .await
                    .map_err(|e| {
                        Error::Refused(format!(
                            "inserting rows into table {}: {}; nothing was imported",
                            p.target.def.name,
                            tenancy_conn::error_text(&e)
                        ))
                    })?;
                if inserted != n {
                    return Err(Error::Refused(format!(
                        "table {}: {n} rows sent, {inserted} inserted; nothing was imported",
                        p.target.def.name
                    )));
                }
                progress.rows(n);
            }
            Item::TableDone(declared) => {
                let p = current
                    .take()
                    .ok_or_else(|| Error::Corrupt("a table end outside a table".into()))?;
                let actual = read_back(tx, p).await?;
                if actual != declared {
                    return Err(Error::Refused(format!(
                        "after loading, table {} holds {} rows with checksum {} but the archive has {} rows with checksum {}: the target changed the rows (a trigger, a default, a type that does not round-trip); nothing was imported",
                        declared.table, actual.rows, actual.checksum, declared.rows, declared.checksum
                    )));
                }
                for (col, seq) in &p.target.sequences {
                    let sql = format!(
                        "SELECT max({})::bigint FROM {}",
                        tenancy_conn::quote_ident(col),
                        p.target.qualified
                    );
                    if let Some(max) = tx.query_one(sql.as_str(), &[]).await?.get(0) {
                        bumps.push((seq.clone(), max));
                    }
                }
                tables.push(actual);
            }
            Item::End(_) => {
                progress.verifying();
                return Ok((tables, bumps));
            }
        }
    }
}

/// The loaded rows of one table, read back as the archive has them, counted and summed.
async fn read_back(tx: &mut TenantTx, p: &Plan) -> Result<TableSummary, Error> {
    let name = &p.target.def.name;
    let client = tx.client().await?;
    let stream = client
        .copy_out(p.read_back.as_str())
        .await
        .map_err(Error::db(format!("reading table {name} back")))?;
    futures_util::pin_mut!(stream);
    let mut sum = RowChecksum::default();
    let mut pending: Vec<u8> = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(Error::db(format!("reading table {name} back")))?;
        pending.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(pos) = pending[start..].iter().position(|b| *b == b'\n') {
            sum.add(&copy_unescape(&pending[start..start + pos]));
            start += pos + 1;
        }
        pending.drain(..start);
    }
    Ok(sum.summary(name))
}

/// A connection to the tenant's database (its cluster's shared database, or its own when
/// dedicated) as the owner login of its cluster.
pub async fn owner_connection(
    catalog: &Client,
    access: &ClusterAccess,
    t: &tenancy_catalog::Tenant,
) -> Result<Client, Error> {
    let cluster = tenancy_catalog::get_cluster(catalog, t.cluster_id).await?;
    let dbname = match (t.placement, &t.database_name) {
        (Placement::Dedicated, Some(d)) => d.clone(),
        _ => cluster.dbname.clone(),
    };
    let cfg = tenancy_sdk::config_for(&cluster, &access.owner, &dbname, &access.tls);
    Ok(tenancy_conn::connect(&cfg).await?)
}

/// Raises each sequence to at least the largest value imported into its column, as the
/// owner of the tenant's database. Returns how many were raised.
pub(crate) async fn raise_sequences(
    catalog: &Client,
    access: &ClusterAccess,
    t: &tenancy_catalog::Tenant,
    bumps: &[(String, i64)],
) -> Result<u64, Error> {
    let owner = owner_connection(catalog, access, t).await?;
    raise_sequences_as(&owner, bumps).await
}

/// [`raise_sequences`] through an owner connection the caller holds.
pub(crate) async fn raise_sequences_as(
    owner: &Client,
    bumps: &[(String, i64)],
) -> Result<u64, Error> {
    let mut raised = 0;
    for (seq, max) in bumps {
        // One statement: the sequence's last value is read and raised together, and only
        // ever raised (another tenant's inserts in pooled tables share the sequence).
        raised += owner
            .execute(
                "SELECT setval(s.seq, $2) FROM (SELECT $1::text::regclass AS seq) s, pg_sequences p
                  WHERE (quote_ident(p.schemaname) || '.' || quote_ident(p.sequencename))::regclass = s.seq
                    AND coalesce(p.last_value, 0) < $2",
                &[&seq.as_str(), max],
            )
            .await
            .map_err(Error::db(format!("raising sequence {seq}")))?;
    }
    Ok(raised)
}
