//! The tenant tables of the schema a tenant's transaction sees, read from the system
//! catalogs inside that transaction (the runtime role may read them; they hold no rows).

use std::collections::{BTreeMap, BTreeSet};

use tenancy_sdk::TenantTx;

use crate::format::{ColumnDef, TableDef};
use crate::Error;

/// A tenant table as this transfer needs it.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    /// Name and columns, as the archive's header lists them.
    pub def: TableDef,
    /// The schema-qualified, quoted name, for SQL text.
    pub qualified: String,
    /// Columns computed by the database (`GENERATED ALWAYS AS … STORED`): never inserted.
    pub generated: BTreeSet<String>,
    /// Columns fed by a sequence (identity or serial), with the sequence's qualified name.
    pub sequences: Vec<(String, String)>,
}

/// The tables of the transaction's current schema (the tenant's schema for a schema
/// tenant, `public` otherwise) that are tenant tables — row-level security enabled and
/// forced, a `tenant_id` column — partitions left out (their parent carries the rows),
/// ordered so that a table comes after the tables its foreign keys reference.
pub(crate) async fn tenant_tables(tx: &mut TenantTx) -> Result<Vec<Table>, Error> {
    let rows = tx
        .query(
            "SELECT c.oid::bigint, c.relname::text, quote_ident(n.nspname) || '.' || quote_ident(c.relname)
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND NOT c.relispartition
                AND c.relrowsecurity AND c.relforcerowsecurity
                AND EXISTS (SELECT 1 FROM pg_attribute a
                             WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
              ORDER BY c.relname",
            &[],
        )
        .await?;
    let mut tables: BTreeMap<i64, Table> = rows
        .iter()
        .map(|r| {
            (
                r.get::<_, i64>(0),
                Table {
                    def: TableDef {
                        name: r.get(1),
                        columns: Vec::new(),
                    },
                    qualified: r.get(2),
                    generated: BTreeSet::new(),
                    sequences: Vec::new(),
                },
            )
        })
        .collect();
    let oids: Vec<i64> = tables.keys().copied().collect();
    let cols = tx
        .query(
            "SELECT a.attrelid::bigint, a.attname::text, format_type(a.atttypid, a.atttypmod),
                    a.attgenerated <> '',
                    pg_get_serial_sequence(a.attrelid::regclass::text, a.attname)
               FROM pg_attribute a
              WHERE a.attrelid::bigint = ANY($1) AND a.attnum > 0 AND NOT a.attisdropped
                AND a.attname <> 'tenant_id'
              ORDER BY a.attrelid, a.attnum",
            &[&oids],
        )
        .await?;
    for r in &cols {
        let Some(t) = tables.get_mut(&r.get::<_, i64>(0)) else {
            continue;
        };
        let name: String = r.get(1);
        if r.get::<_, bool>(3) {
            t.generated.insert(name.clone());
        }
        if let Some(seq) = r.get::<_, Option<String>>(4) {
            t.sequences.push((name.clone(), seq));
        }
        t.def.columns.push(ColumnDef {
            name,
            type_name: r.get(2),
        });
    }
    let fks = tx.query(FOREIGN_KEYS_SQL, &[&oids]).await?;
    Ok(foreign_key_order(&oids, &fks)
        .into_iter()
        .filter_map(|o| tables.remove(&o))
        .collect())
}

/// The foreign keys among the tables whose oids are `$1` (a `bigint[]`): rows of
/// (referencing, referenced) oids, a table's references to itself left out.
pub const FOREIGN_KEYS_SQL: &str =
    "SELECT DISTINCT conrelid::bigint, confrelid::bigint FROM pg_constraint
  WHERE contype = 'f' AND conrelid::bigint = ANY($1) AND confrelid::bigint = ANY($1)
    AND conrelid <> confrelid";

/// `oids` referenced tables first, by the rows of [`FOREIGN_KEYS_SQL`] run on them.
pub fn foreign_key_order(oids: &[i64], fks: &[tokio_postgres::Row]) -> Vec<i64> {
    let edges: Vec<(i64, i64)> = fks.iter().map(|r| (r.get(0), r.get(1))).collect();
    referenced_first(oids, &edges)
}

/// `nodes` ordered so that for each edge (from, to), `to` comes before `from` where the
/// edges allow it (Kahn's algorithm, smallest first among the ready; a cycle's tables
/// follow in their given order).
pub fn referenced_first(nodes: &[i64], edges: &[(i64, i64)]) -> Vec<i64> {
    let mut waiting: BTreeMap<i64, BTreeSet<i64>> =
        nodes.iter().map(|n| (*n, BTreeSet::new())).collect();
    for (from, to) in edges {
        if let Some(w) = waiting.get_mut(from) {
            w.insert(*to);
        }
    }
    let mut out = Vec::with_capacity(nodes.len());
    while !waiting.is_empty() {
        let ready: Vec<i64> = nodes
            .iter()
            .filter(|n| waiting.get(n).is_some_and(|w| w.is_empty()))
            .copied()
            .collect();
        let take = if ready.is_empty() {
            // A cycle: take the first remaining table in the given order.
            nodes
                .iter()
                .copied()
                .filter(|n| waiting.contains_key(n))
                .take(1)
                .collect()
        } else {
            ready
        };
        for n in take {
            waiting.remove(&n);
            for w in waiting.values_mut() {
                w.remove(&n);
            }
            out.push(n);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::referenced_first;

    #[test]
    fn referenced_tables_come_first() {
        // 3 references 2 references 1; 4 stands alone.
        assert_eq!(
            referenced_first(&[3, 1, 2, 4], &[(3, 2), (2, 1)]),
            vec![1, 4, 2, 3]
        );
        // A cycle still yields every table once.
        let mut cyc = referenced_first(&[1, 2], &[(1, 2), (2, 1)]);
        cyc.sort();
        assert_eq!(cyc, vec![1, 2]);
    }
}
