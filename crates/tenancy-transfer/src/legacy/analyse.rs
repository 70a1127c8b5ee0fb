//! Reading the tables of the source and of the app (columns, keys, unique constraints,
//! foreign keys, sequences) and comparing them: the [`Report`] of every incompatibility
//! and, where there is none, the [`TablePlan`] of each table.

use std::collections::{BTreeMap, BTreeSet};

use tokio_postgres::Client;

use super::{Column, LegacyOptions, Rel, Report, TablePlan};
use crate::Error;

/// The tables of one side in the schemas `schemas` (source names; `public` stands for the
/// connection's current schema).
async fn relations(c: &Client, schemas: Option<&[String]>) -> Result<Vec<Rel>, Error> {
    let rows = c
        .query(
            "SELECT c.oid::bigint,
                    CASE WHEN n.nspname = current_schema() THEN 'public' ELSE n.nspname::text END,
                    c.relname::text,
                    quote_ident(n.nspname) || '.' || quote_ident(c.relname),
                    c.relrowsecurity AND c.relforcerowsecurity AND EXISTS (
                        SELECT 1 FROM pg_attribute a
                         WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped),
                    greatest(c.reltuples, 0)::bigint
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
                AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                AND n.nspname !~ '^pg_'
                AND ($1::text[] IS NULL
                     OR (CASE WHEN n.nspname = current_schema() THEN 'public' ELSE n.nspname::text END) = ANY($1))
              ORDER BY 2, 3",
            &[&schemas],
        )
        .await
        .map_err(Error::db("listing tables"))?;
    let mut rels: BTreeMap<i64, Rel> = rows
        .iter()
        .map(|r| {
            (
                r.get::<_, i64>(0),
                Rel {
                    schema: r.get(1),
                    name: r.get(2),
                    qualified: r.get(3),
                    tenant: r.get(4),
                    estimate: r.get(5),
                    columns: Vec::new(),
                    uniques: Vec::new(),
                },
            )
        })
        .collect();
    let oids: Vec<i64> = rels.keys().copied().collect();
    let cols = c
        .query(
            "SELECT a.attrelid::bigint, a.attname::text, format_type(a.atttypid, a.atttypmod),
                    a.atttypid::bigint, a.attgenerated <> '', a.attnotnull,
                    a.atthasdef OR a.attidentity <> '',
                    pg_get_serial_sequence(a.attrelid::regclass::text, a.attname)
               FROM pg_attribute a
              WHERE a.attrelid::bigint = ANY($1) AND a.attnum > 0 AND NOT a.attisdropped
              ORDER BY a.attrelid, a.attnum",
            &[&oids],
        )
        .await
        .map_err(Error::db("listing columns"))?;
    for r in &cols {
        if let Some(t) = rels.get_mut(&r.get::<_, i64>(0)) {
            t.columns.push(Column {
                name: r.get(1),
                type_name: r.get(2),
                type_oid: r.get(3),
                generated: r.get(4),
                not_null: r.get(5),
                has_default: r.get(6),
                sequence: r.get(7),
            });
        }
    }
    let uniques = c
        .query(
            "SELECT k.conrelid::bigint, k.conname::text, k.contype = 'p',
                    ARRAY(SELECT a.attname::text FROM unnest(k.conkey) WITH ORDINALITY u(n, i)
                            JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n
                           ORDER BY u.i)
               FROM pg_constraint k
              WHERE k.contype IN ('p', 'u') AND k.conrelid::bigint = ANY($1)
              ORDER BY 1, 2",
            &[&oids],
        )
        .await
        .map_err(Error::db("listing unique constraints"))?;
    for r in &uniques {
        if let Some(t) = rels.get_mut(&r.get::<_, i64>(0)) {
            t.uniques.push((r.get(1), r.get(2), r.get(3)));
        }
    }
    // Referenced tables first.
    let fks = c
        .query(crate::FOREIGN_KEYS_SQL, &[&oids])
        .await
        .map_err(Error::db("listing foreign keys"))?;
    Ok(crate::foreign_key_order(&oids, &fks)
        .into_iter()
        .filter_map(|o| rels.remove(&o))
        .collect())
}

fn int_rank(oid: i64) -> Option<u8> {
    match oid {
        21 => Some(2),
        23 => Some(4),
        20 => Some(8),
        _ => None,
    }
}

fn key_columns(rel: &Rel) -> BTreeSet<String> {
    rel.uniques
        .iter()
        .flat_map(|(_, _, cols)| cols.iter().cloned())
        .collect()
}

fn quoted_list(cols: &[String]) -> String {
    cols.iter()
        .map(|c| tenancy_conn::quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Compares the source with the target's tables and plans each table. `scan` also reads
/// the source's rows where a finding depends on them (duplicates under a key the app
/// makes unique, values of a narrower key type) and counts each table exactly.
pub(super) async fn analyse(
    source: &Client,
    target: &Client,
    opts: &LegacyOptions,
    scan: bool,
) -> Result<(Report, Vec<TablePlan>), Error> {
    let mut report = Report::default();
    let excluded: BTreeSet<String> = opts
        .exclude
        .iter()
        .chain(opts.ledger.iter())
        .map(|t| {
            if t.contains('.') {
                t.clone()
            } else {
                format!("public.{t}")
            }
        })
        .collect();
    let src: Vec<Rel> = relations(source, None)
        .await?
        .into_iter()
        .filter(|r| !excluded.contains(&format!("{}.{}", r.schema, r.name)))
        .collect();
    let schemas: Vec<String> = src
        .iter()
        .map(|r| r.schema.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let tgt = relations(target, Some(&schemas)).await?;
    if !tgt.iter().any(|t| t.tenant) {
        return Err(Error::Refused(format!(
            "the target database holds no tenant table in schema(s) {}: the app's migrations have not run there yet (run `tenancy migrate`, or provision a first tenant), or the source is not a database of this app",
            schemas.join(", ")
        )));
    }
    let by_name = |rels: &[Rel], schema: &str, name: &str| -> Option<usize> {
        rels.iter()
            .position(|r| r.schema == schema && r.name == name)
    };
    for s in &src {
        match by_name(&tgt, &s.schema, &s.name) {
            None => report.blocker(
                s.display(),
                "the app has no such table".into(),
                format!(
                    "drop or rename it in a copy of the source if it is a leftover, or pass --exclude {} if its rows are not the tenant's",
                    s.display()
                ),
            ),
            Some(i) if !tgt[i].tenant => report.blocker(
                s.display(),
                "the app's table of this name is shared, not a tenant table (no tenant_id with forced row-level security)".into(),
                format!(
                    "pass --exclude {} and load its rows into the shared table separately, if they belong there",
                    s.display()
                ),
            ),
            Some(_) => {}
        }
    }
    let mut plans = Vec::new();
    for t in tgt.iter().filter(|t| t.tenant) {
        let Some(si) = by_name(&src, &t.schema, &t.name) else {
            report.note(
                t.display(),
                "the source has no such table: the tenant's starts empty".into(),
                "nothing, if the app created it after the single-tenant era; otherwise import from a source that has it".into(),
            );
            continue;
        };
        let s = &src[si];
        let display = s.display();
        let mut compared = Vec::new();
        let mut inserted = Vec::new();
        let mut inserted_at = Vec::new();
        let mut binary = true;
        let keys = key_columns(t);
        for sc in &s.columns {
            if sc.name == "tenant_id" {
                report.blocker(
                    format!("{display}.tenant_id"),
                    "the source already has a tenant_id column: it is not a single-tenant database".into(),
                    "import it with `tenancy tenants import` from an export, or drop the column in a copy of the source".into(),
                );
                continue;
            }
            let Some(tc) = t.columns.iter().find(|c| c.name == sc.name) else {
                report.blocker(
                    format!("{display}.{}", sc.name),
                    "the app has no such column".into(),
                    "drop or rename it in a copy of the source (or add it to the app with a migration), then import again".into(),
                );
                continue;
            };
            let subject = format!("{display}.{}", sc.name);
            let what = if keys.contains(&sc.name) {
                "key column"
            } else {
                "column"
            };
            if tc.type_name != sc.type_name {
                match (int_rank(sc.type_oid), int_rank(tc.type_oid)) {
                    (Some(a), Some(b)) if a < b => report.note(
                        subject.clone(),
                        format!("{what} is {} in the source and {} in the app: widened", sc.type_name, tc.type_name),
                        "nothing".into(),
                    ),
                    (Some(_), Some(_)) => {
                        let fits = if scan {
                            let sql = format!(
                                "SELECT coalesce(min({c})::bigint, 0), coalesce(max({c})::bigint, 0) FROM {}",
                                s.qualified,
                                c = tenancy_conn::quote_ident(&sc.name)
                            );
                            let r = source.query_one(sql.as_str(), &[]).await.map_err(Error::db(format!("reading the range of {subject}")))?;
                            let (lo, hi): (i64, i64) = (r.get(0), r.get(1));
                            let max = if tc.type_oid == 21 { i64::from(i16::MAX) } else { i64::from(i32::MAX) };
                            Some(lo >= -max - 1 && hi <= max)
                        } else {
                            None
                        };
                        match fits {
                            Some(false) => report.blocker(
                                subject.clone(),
                                format!("{what} is {} in the source but {} in the app, and the source holds values outside its range", sc.type_name, tc.type_name),
                                "widen the column in the app with a migration, or renumber the rows in a copy of the source".into(),
                            ),
                            _ => report.note(
                                subject.clone(),
                                format!("{what} is {} in the source and {} in the app: every value must fit", sc.type_name, tc.type_name),
                                "nothing if the dry run reports no blocker for it".into(),
                            ),
                        }
                    }
                    _ => report.blocker(
                        subject.clone(),
                        format!(
                            "{what} is {} in the source but {} in the app{}",
                            sc.type_name,
                            tc.type_name,
                            if keys.contains(&sc.name) { ": the key type does not fit" } else { "" }
                        ),
                        format!(
                            "convert it in a copy of the source (ALTER TABLE {} ALTER COLUMN {} TYPE {}), or bring the source to the app's migration version first",
                            s.qualified,
                            tenancy_conn::quote_ident(&sc.name),
                            tc.type_name
                        ),
                    ),
                }
            }
            // A built-in type (its oid the same in every database) of the same type and
            // modifier on both sides: COPY's binary form of a value reads back as itself.
            binary &=
                tc.type_oid == sc.type_oid && tc.type_name == sc.type_name && sc.type_oid < 10_000;
            compared.push(tenancy_conn::quote_ident(&sc.name));
            if !tc.generated {
                inserted_at.push(compared.len() - 1);
                inserted.push((tenancy_conn::quote_ident(&sc.name), tc.type_name.clone()));
            }
        }
        for tc in &t.columns {
            if tc.name == "tenant_id" || s.columns.iter().any(|c| c.name == tc.name) {
                continue;
            }
            if tc.not_null && !tc.has_default && !tc.generated {
                report.blocker(
                    format!("{display}.{}", tc.name),
                    "the app requires this column (NOT NULL, no default) and the source has none".into(),
                    "add it to a copy of the source with the values the app expects, or bring the source to the app's migration version".into(),
                );
            } else {
                report.note(
                    format!("{display}.{}", tc.name),
                    "the source has no such column: imported rows take its default".into(),
                    "nothing, if the default is right for old rows".into(),
                );
            }
        }
        // Unique constraints: the app's are per tenant (they include tenant_id).
        for (name, primary, cols) in &t.uniques {
            let per: Vec<String> = cols.iter().filter(|c| *c != "tenant_id").cloned().collect();
            if per.len() == cols.len() {
                report.note(
                    format!("{display} ({})", cols.join(", ")),
                    format!("the app's unique constraint {name} spans all tenants: a row may collide with another tenant's, and the import then fails"),
                    "nothing, unless the import reports such a collision".into(),
                );
                continue;
            }
            let in_source = s
                .uniques
                .iter()
                .any(|(_, _, sc)| sc.iter().collect::<BTreeSet<_>>() == per.iter().collect());
            if in_source {
                report.note(
                    format!("{display} ({})", per.join(", ")),
                    if *primary {
                        format!("the key ({}) becomes ({}): rows keep their ids, unique within the tenant", per.join(", "), cols.join(", "))
                    } else {
                        format!("unique in the whole source database, unique per tenant in the app ({name})")
                    },
                    format!("look rows up by ({}) only inside the tenant's transaction; nothing to change in the data", per.join(", ")),
                );
                continue;
            }
            if per.iter().any(|c| !s.columns.iter().any(|x| &x.name == c)) {
                continue; // Reported as a missing column.
            }
            let dups = if scan {
                let list = quoted_list(&per);
                let not_null = per
                    .iter()
                    .map(|c| format!("{} IS NOT NULL", tenancy_conn::quote_ident(c)))
                    .collect::<Vec<_>>()
                    .join(" AND ");
                let sql = format!(
                    "SELECT count(*) FROM (SELECT 1 FROM {} WHERE {not_null} GROUP BY {list} HAVING count(*) > 1) d",
                    s.qualified
                );
                Some(
                    source
                        .query_one(sql.as_str(), &[])
                        .await
                        .map_err(Error::db(format!("looking for duplicates in {display}")))?
                        .get::<_, i64>(0),
                )
            } else {
                None
            };
            match dups {
                Some(0) => report.note(
                    format!("{display} ({})", per.join(", ")),
                    format!("not unique in the source, unique per tenant in the app ({name}); the source has no duplicates"),
                    "nothing".into(),
                ),
                Some(n) => report.blocker(
                    format!("{display} ({})", per.join(", ")),
                    format!("{n} groups of rows share the same ({}) in the source: they would collide under the app's unique constraint {name}", per.join(", ")),
                    format!(
                        "merge or renumber them in a copy of the source (SELECT {list}, count(*) FROM {} GROUP BY {list} HAVING count(*) > 1 lists them)",
                        s.qualified,
                        list = quoted_list(&per)
                    ),
                ),
                None => report.note(
                    format!("{display} ({})", per.join(", ")),
                    format!("not unique in the source, unique per tenant in the app ({name})"),
                    "run with --dry-run to look for rows that would collide".into(),
                ),
            }
        }
        let rows = if scan {
            let sql = format!("SELECT count(*) FROM {}", s.qualified);
            source
                .query_one(sql.as_str(), &[])
                .await
                .map_err(Error::db(format!("counting {display}")))?
                .get::<_, i64>(0)
        } else {
            s.estimate
        };
        report.tables.push((display.clone(), rows));
        let sequences = t
            .columns
            .iter()
            .filter(|c| s.columns.iter().any(|x| x.name == c.name))
            .filter_map(|c| {
                c.sequence
                    .clone()
                    .map(|q| (tenancy_conn::quote_ident(&c.name), q))
            })
            .collect();
        plans.push(TablePlan {
            display,
            source: s.qualified.clone(),
            target: t.qualified.clone(),
            compared,
            inserted,
            inserted_at,
            sequences,
            binary,
        });
    }
    report.findings.sort_by_key(|f| f.severity);
    Ok((report, plans))
}

/// The values of the first column of `ledger` (`schema.table`), or `None` when it does
/// not exist there.
async fn ledger(c: &Client, ledger: &str) -> Result<Option<BTreeSet<String>>, Error> {
    let col: Option<String> = c
        .query_opt(
            "SELECT a.attname::text FROM pg_attribute a
              WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
              ORDER BY a.attnum LIMIT 1",
            &[&ledger],
        )
        .await
        .map_err(Error::db(format!("reading the ledger {ledger}")))?
        .map(|r| r.get(0));
    let Some(col) = col else { return Ok(None) };
    let sql = format!(
        "SELECT {}::text FROM {}",
        tenancy_conn::quote_ident(&col),
        ledger
            .split('.')
            .map(tenancy_conn::quote_ident)
            .collect::<Vec<_>>()
            .join(".")
    );
    let rows = c
        .query(sql.as_str(), &[])
        .await
        .map_err(Error::db(format!("reading the ledger {ledger}")))?;
    Ok(Some(rows.iter().filter_map(|r| r.get(0)).collect()))
}

/// Compares a source with the app's tenant tables in `target` (an owner's connection to
/// a database that holds them, e.g. a pooled cluster's) without writing anything: every
/// incompatibility, with what to do. Reads the source's rows where a finding depends on
/// them.
pub async fn inspect(
    source: &Client,
    target: &Client,
    opts: &LegacyOptions,
) -> Result<Report, Error> {
    let (mut report, _) = analyse(source, target, opts, true).await?;
    if let Some(l) = &opts.ledger {
        match (ledger(source, l).await?, ledger(target, l).await?) {
            (None, _) => report.blocker(
                "database",
                format!("the source has no migration ledger {l}"),
                "pass the app's ledger table with --ledger, or leave --ledger out to compare the tables alone".into(),
            ),
            (_, None) => report.blocker(
                "database",
                format!("the app has no migration ledger {l}"),
                "pass the app's ledger table with --ledger".into(),
            ),
            (Some(s), Some(t)) => {
                let missing: Vec<&String> = t.difference(&s).collect();
                let extra: Vec<&String> = s.difference(&t).collect();
                if !missing.is_empty() {
                    report.blocker(
                        "database",
                        format!("the source is at an older app version: migrations {missing:?} of the app were never applied to it"),
                        format!("apply {missing:?} (their single-tenant form) to a copy of the source, then import it"),
                    );
                }
                if !extra.is_empty() {
                    report.blocker(
                        "database",
                        format!("the source is at a newer app version: it has migrations {extra:?} this deployment lacks"),
                        "bring this deployment up to the source's version first (`tenancy migrate` with the newer release's migrations), then import".into(),
                    );
                }
            }
        }
        report.findings.sort_by_key(|f| f.severity);
    }
    Ok(report)
}
