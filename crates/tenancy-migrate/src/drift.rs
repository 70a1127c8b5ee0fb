//! Drift detection: is every target's schema what its migrations say it should be?
//!
//! The expected fingerprint comes from a reference schema built from nothing by the same
//! migrations inside a transaction that is rolled back (on the shared database of the
//! first cluster), so nothing is left behind. Each target's fingerprint — tables and
//! their RLS flags, columns (type, nullability, default, identity), indexes, constraints
//! and policies — is compared as one digest per schema (one query per database); only
//! the schemas whose digest differs are read in full to say what differs.

use std::collections::{BTreeMap, HashMap};

use tenancy_catalog::{ClusterRecord, MigrationTarget};
use tenancy_core::Placement;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::engine::connect;
use crate::{sql, Error, Migrator};

/// Name of the scratch schema the reference is built in (rolled back).
const REFERENCE: &str = "tenancy_drift_reference";

/// How one object differs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// Expected but absent.
    Missing {
        /// Its expected definition.
        expected: String,
    },
    /// Present but not expected.
    Added {
        /// Its definition.
        found: String,
    },
    /// Present with another definition.
    Changed {
        /// Expected definition.
        expected: String,
        /// Found definition.
        found: String,
    },
}

/// One differing object, e.g. `column t00.name`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Difference {
    /// Kind and name of the object (`table t00`, `column t00.name`, `index t00_pkey`, …).
    pub object: String,
    /// How it differs.
    #[serde(flatten)]
    pub change: Change,
}

/// A target whose schema differs from the expected one.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TargetDrift {
    /// Tenant or cluster id.
    pub target_id: Uuid,
    /// Slug or cluster name.
    pub label: String,
    /// `pooled`, `schema` or `dedicated`.
    pub kind: String,
    /// The schema compared.
    pub schema: String,
    /// What differs.
    pub differences: Vec<Difference>,
}

/// The result of a drift check.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DriftReport {
    /// The version compared against.
    pub version: i32,
    /// Targets compared.
    pub checked: usize,
    /// Targets not compared because the ledger says they are behind (`label`, version).
    pub behind: Vec<(String, i32)>,
    /// Targets that differ.
    pub drifted: Vec<TargetDrift>,
}

type Fingerprint = BTreeMap<String, String>;

async fn digests(client: &Client, schemas: &[String]) -> Result<HashMap<String, String>, Error> {
    let rows = client
        .query(&sql::fingerprint_digests(), &[&schemas])
        .await
        .map_err(Error::db("fingerprinting schemas"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

async fn rows(client: &Client, schemas: &[String]) -> Result<HashMap<String, Fingerprint>, Error> {
    let rows = client
        .query(&sql::fingerprint_rows(), &[&schemas])
        .await
        .map_err(Error::db("reading schema fingerprints"))?;
    let mut out: HashMap<String, Fingerprint> = HashMap::new();
    for r in rows {
        out.entry(r.get(0)).or_default().insert(r.get(1), r.get(2));
    }
    Ok(out)
}

/// The differences of `found` against `expected`.
pub fn diff(expected: &Fingerprint, found: &Fingerprint) -> Vec<Difference> {
    let mut out = Vec::new();
    for (k, v) in expected {
        match found.get(k) {
            None => out.push(Difference {
                object: k.clone(),
                change: Change::Missing {
                    expected: v.clone(),
                },
            }),
            Some(f) if f != v => out.push(Difference {
                object: k.clone(),
                change: Change::Changed {
                    expected: v.clone(),
                    found: f.clone(),
                },
            }),
            Some(_) => {}
        }
    }
    for (k, v) in found {
        if !expected.contains_key(k) {
            out.push(Difference {
                object: k.clone(),
                change: Change::Added { found: v.clone() },
            });
        }
    }
    out
}

impl Migrator {
    /// Compares every target at the latest version with a reference schema migrated to it.
    pub async fn check_drift(&self) -> Result<DriftReport, Error> {
        let catalog = self.catalog_client().await?;
        self.verify_checksums(&catalog).await?;
        let latest = self.set().latest();
        let targets = tenancy_catalog::all_targets(&catalog).await?;
        let clusters: HashMap<Uuid, ClusterRecord> = tenancy_catalog::list_clusters(&catalog)
            .await?
            .into_iter()
            .map(|c| (c.id, c))
            .collect();
        let mut report = DriftReport {
            version: latest,
            checked: 0,
            behind: Vec::new(),
            drifted: Vec::new(),
        };
        let (current, behind): (Vec<&MigrationTarget>, Vec<&MigrationTarget>) =
            targets.iter().partition(|t| t.version >= latest);
        report.behind = behind
            .iter()
            .map(|t| (t.label.clone(), t.version))
            .collect();
        let Some(first) = current.first() else {
            return Ok(report);
        };
        let ref_cluster = clusters
            .get(&first.cluster_id)
            .ok_or(Error::UnknownCluster(first.cluster_id))?;
        let (ref_digest, expected) = self.reference(ref_cluster).await?;

        // Group by database: (cluster, database) → [(target, schema)].
        let mut by_db: BTreeMap<(Uuid, String), Vec<(&MigrationTarget, String)>> = BTreeMap::new();
        for t in &current {
            let cluster = clusters
                .get(&t.cluster_id)
                .ok_or(Error::UnknownCluster(t.cluster_id))?;
            let (schema, db) = match (t.kind, t.tenant_id) {
                (Placement::Schema, Some(id)) => (
                    t.schema_name
                        .clone()
                        .unwrap_or_else(|| tenancy_catalog::naming::schema_name_for(id)),
                    cluster.dbname.clone(),
                ),
                (Placement::Dedicated, Some(id)) => (
                    "public".to_owned(),
                    t.database_name
                        .clone()
                        .unwrap_or_else(|| tenancy_catalog::naming::database_name_for(id)),
                ),
                _ => ("public".to_owned(), cluster.dbname.clone()),
            };
            by_db
                .entry((t.cluster_id, db))
                .or_default()
                .push((t, schema));
        }
        for ((cluster_id, db), items) in by_db {
            let cluster = &clusters[&cluster_id];
            let client = connect(
                &self.owner_config(cluster, &db, None),
                &format!("database {db}"),
            )
            .await?;
            let schemas: Vec<String> = items.iter().map(|(_, s)| s.clone()).collect();
            let found = digests(&client, &schemas).await?;
            report.checked += items.len();
            let differing: Vec<&(&MigrationTarget, String)> = items
                .iter()
                .filter(|(_, s)| found.get(s) != Some(&ref_digest))
                .collect();
            if differing.is_empty() {
                continue;
            }
            let names: Vec<String> = differing.iter().map(|(_, s)| s.clone()).collect();
            let full = rows(&client, &names).await?;
            let empty = Fingerprint::new();
            for (t, schema) in differing {
                let differences = diff(&expected, full.get(schema).unwrap_or(&empty));
                report.drifted.push(TargetDrift {
                    target_id: t.target_id,
                    label: t.label.clone(),
                    kind: t.kind.as_str().to_owned(),
                    schema: schema.clone(),
                    differences,
                });
            }
        }
        Ok(report)
    }

    /// The reference fingerprint (digest and rows), built in a rolled-back transaction.
    async fn reference(&self, cluster: &ClusterRecord) -> Result<(String, Fingerprint), Error> {
        let mut client = connect(
            &self.owner_config(cluster, &cluster.dbname, None),
            &format!("database {} of cluster {}", cluster.dbname, cluster.name),
        )
        .await?;
        let tx = client
            .transaction()
            .await
            .map_err(Error::db("starting the reference transaction"))?;
        tx.batch_execute(&sql::reference(REFERENCE, &self.set().app))
            .await
            .map_err(Error::db(
                "building the reference schema from the migrations",
            ))?;
        let names = vec![REFERENCE.to_owned()];
        let digest_rows = tx
            .query(&sql::fingerprint_digests(), &[&names])
            .await
            .map_err(Error::db("fingerprinting the reference schema"))?;
        let digest: String = digest_rows.first().map(|r| r.get(1)).unwrap_or_default();
        let fp_rows = tx
            .query(&sql::fingerprint_rows(), &[&names])
            .await
            .map_err(Error::db("reading the reference fingerprint"))?;
        let fp = fp_rows.iter().map(|r| (r.get(1), r.get(2))).collect();
        tx.rollback()
            .await
            .map_err(Error::db("dropping the reference schema"))?;
        Ok((digest, fp))
    }
}
