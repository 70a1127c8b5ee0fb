//! Reach: what the runtime role can read through views, materialized views, foreign tables
//! and the functions views call, decided over the object graph.

use std::collections::{HashMap, HashSet};

use tokio_postgres::Client;

use crate::audit::{qi, query, Target};
use crate::functions::Function;
use crate::model::{CheckError, Finding, Severity};
use crate::policies::Policy;
use crate::predicate::{self, Shape};
use crate::tables::Table;

/// A view, materialized view or foreign table and what it reads.
#[derive(Debug, Clone)]
struct Node {
    oid: u32,
    object: String,
    qname: String,
    /// `v` view, `m` materialized view, `f` foreign table.
    kind: char,
    owner: String,
    owner_bypass: bool,
    invoker: bool,
    /// SELECT on it or on any of its columns, for the runtime role.
    readable: bool,
    /// Relations its rewrite rule references.
    relations: Vec<u32>,
    /// Functions its rewrite rule references.
    functions: Vec<u32>,
    /// Its definition mentions the caller's context (a view that filters by it).
    /// The WHERE clause of its definition when the definition mentions the caller's
    /// context (a view that filters by it).
    context_filter: Option<String>,
}

/// Whether `role` (by name; `bypass`: superuser or BYPASSRLS) sees rows of tenant table `tb`
/// beyond any tenant context: it bypasses RLS, the table has none, it owns the table
/// without FORCE, or a permissive policy for it (or PUBLIC) is not a tenant predicate.
pub(crate) fn sees_all(
    role: &str,
    bypass: bool,
    owners: &HashSet<(String, String)>,
    tb: &Table,
    pols: &[Policy],
) -> Option<&'static str> {
    if bypass {
        return Some("superuser or BYPASSRLS");
    }
    if !tb.rls {
        return Some("row-level security is disabled");
    }
    let owns = role == tb.owner || owners.contains(&(role.to_owned(), tb.owner.clone()));
    if owns && !tb.force {
        return Some("owner of a table without FORCE");
    }
    let open = pols.iter().any(|p| {
        p.table == tb.oid
            && p.permissive
            && p.cmd != "a"
            && p.roles.iter().any(|r| r == "PUBLIC" || r == role)
            && p.functions.is_empty()
            && p.using
                .as_deref()
                .is_some_and(|u| predicate::classify(u, &tb.col_name) != Shape::Tenant)
    });
    open.then_some("a policy for it that is not a tenant predicate")
}

/// One step of a path through the object graph.
struct Walk<'a> {
    nodes: &'a HashMap<u32, Node>,
    tables: &'a HashMap<u32, &'a Table>,
    funcs: &'a HashMap<u32, &'a Function>,
    pols: &'a [Policy],
    owners: &'a HashSet<(String, String)>,
    runtime: &'a str,
    /// Steps left for the current entry: paths through a graph of views that share
    /// sub-views are enumerated, so a pathological graph is cut off rather than walked for
    /// ever (the first leaks found are what matters).
    budget: std::cell::Cell<usize>,
}

/// Steps of the walk from one entry object.
const WALK_BUDGET: usize = 10_000;

/// What a path reaches that leaks.
struct Leak {
    rule: &'static str,
    severity: Severity,
    path: String,
    table: String,
    why: String,
}

impl Walk<'_> {
    /// Walks from node `oid` read as `identity`, collecting leaks.
    fn visit(
        &self,
        oid: u32,
        identity: (&str, bool),
        in_matview: bool,
        path: &mut Vec<String>,
        seen: &mut HashSet<u32>,
        out: &mut Vec<Leak>,
    ) {
        let Some(n) = self.nodes.get(&oid) else {
            return;
        };
        if self.budget.get() == 0 {
            return;
        }
        self.budget.set(self.budget.get() - 1);
        if !seen.insert(oid) {
            return;
        }
        let ((as_role, bypass), step) = match n.kind {
            'v' if n.invoker => (identity, format!("{} (security_invoker)", n.object)),
            'v' => (
                (n.owner.as_str(), n.owner_bypass),
                format!("{} (runs as its owner {})", n.object, n.owner),
            ),
            'm' => (
                (n.owner.as_str(), n.owner_bypass),
                format!("{} (materialized view, filled by {})", n.object, n.owner),
            ),
            _ => (identity, format!("{} (foreign table)", n.object)),
        };
        path.push(step);
        if n.kind == 'f' {
            out.push(Leak {
                rule: "foreign-table-readable",
                severity: Severity::Warning,
                path: path.join(" → "),
                table: n.object.clone(),
                why: "foreign tables do not enforce row-level security; the remote side decides what is returned".into(),
            });
        }
        for rel in &n.relations {
            if let Some(tb) = self.tables.get(rel) {
                let matview = in_matview || n.kind == 'm';
                let leak = if matview {
                    Some("materialized views cannot have row-level security".to_owned())
                } else if as_role == self.runtime {
                    None
                } else {
                    sees_all(as_role, bypass, self.owners, tb, self.pols).and_then(|w| {
                        match &n.context_filter {
                            // The view filters by the caller itself: trusted when its WHERE
                            // clause is a tenant predicate on the table's key.
                            Some(filter) => match predicate::classify(filter, &tb.col_name) {
                                Shape::Tenant => None,
                                shape => Some(format!("{as_role} reads it with {w}, and the view's own filter ({}) lets other tenants' rows through: {}", filter.trim(), shape.describe())),
                            },
                            None => Some(format!("{as_role} reads it with {w}")),
                        }
                    })
                };
                if let Some(why) = leak {
                    out.push(Leak {
                        rule: if matview {
                            "matview-tenant-data"
                        } else {
                            "view-bypasses-rls"
                        },
                        severity: Severity::Error,
                        path: format!("{} → {}", path.join(" → "), tb.object()),
                        table: tb.object(),
                        why,
                    });
                }
            } else if self.nodes.contains_key(rel) {
                self.visit(
                    *rel,
                    (as_role, bypass),
                    in_matview || n.kind == 'm',
                    path,
                    seen,
                    out,
                );
            }
        }
        for fo in &n.functions {
            let Some(func) = self.funcs.get(fo) else {
                continue;
            };
            if !func.secdef || func.trusted || func.narrow_lookup {
                continue;
            }
            let body = func.body.to_lowercase();
            for tb in self.tables.values() {
                if !predicate::references(&body, &tb.name.to_lowercase()) {
                    continue;
                }
                if let Some(w) =
                    sees_all(&func.owner, func.owner_bypass, self.owners, tb, self.pols)
                {
                    out.push(Leak {
                        rule: "view-bypasses-rls",
                        severity: Severity::Error,
                        path: format!(
                            "{} → {}({}) (SECURITY DEFINER, runs as {}) → {}",
                            path.join(" → "),
                            func.qname,
                            func.signature,
                            func.owner,
                            tb.object()
                        ),
                        table: tb.object(),
                        why: format!("{} reads it with {w}", func.owner),
                    });
                }
            }
        }
        path.pop();
        seen.remove(&oid);
    }
}

/// Views, materialized views and foreign tables the runtime role can read (table or column
/// privileges), followed through the object graph: a view without security_invoker reads
/// what it references as its owner, a security_invoker view as whoever reads it, a
/// materialized view holds what its owner saw at REFRESH, a SECURITY DEFINER function a
/// view calls reads as the function's owner. A path that ends at a tenant table read by a
/// role that sees every tenant's rows there is an error on the object the runtime role
/// reads, with the path in the message. A view whose definition filters by the caller's
/// context is trusted to do so (the probe is the behavioural cross-check).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn view_rules(
    client: &Client,
    t: &Target,
    tables: &HashMap<u32, &Table>,
    funcs: &[Function],
    pols: &[Policy],
    context_functions: &[String],
    f: &mut Vec<Finding>,
) -> Result<(), CheckError> {
    let rows = t.rows(
        client,
        "SELECT v.oid, n.nspname::text, v.relname::text, v.relkind::text, pg_get_userbyid(v.relowner)::text, \
                vo.rolsuper OR vo.rolbypassrls, \
                EXISTS (SELECT 1 FROM unnest(coalesce(v.reloptions, '{}'::text[])) o \
                         WHERE lower(o) IN ('security_invoker=true', 'security_invoker=on', 'security_invoker=1', 'security_invoker=yes')), \
                has_table_privilege($1::oid, v.oid, 'SELECT') OR has_any_column_privilege($1::oid, v.oid, 'SELECT'), \
                ARRAY(SELECT DISTINCT d.refobjid FROM pg_catalog.pg_rewrite rw JOIN pg_catalog.pg_depend d \
                        ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = rw.oid AND d.refclassid = 'pg_catalog.pg_class'::regclass \
                       WHERE rw.ev_class = v.oid AND d.refobjid <> v.oid), \
                ARRAY(SELECT DISTINCT d.refobjid FROM pg_catalog.pg_rewrite rw JOIN pg_catalog.pg_depend d \
                        ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = rw.oid AND d.refclassid = 'pg_catalog.pg_proc'::regclass \
                       WHERE rw.ev_class = v.oid), \
                CASE WHEN v.relkind IN ('v', 'm') THEN coalesce(pg_get_viewdef(v.oid), '') ELSE '' END \
           FROM pg_catalog.pg_class v \
           JOIN pg_catalog.pg_namespace n ON n.oid = v.relnamespace \
           JOIN pg_catalog.pg_roles vo ON vo.oid = v.relowner \
          WHERE v.relkind IN ('v', 'm', 'f') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
            AND n.nspname NOT LIKE 'pg\\_toast%' ORDER BY 2, 3",
        "reading views",
    )
    .await?;
    let mut nodes: HashMap<u32, Node> = HashMap::new();
    for r in rows {
        let schema: String = r.get(1);
        let name: String = r.get(2);
        let kind: String = r.get(3);
        let owner: String = r.get(4);
        let owner_bypass: bool = r.get(5);
        let def: String = r.get(10);
        let oid: u32 = r.get(0);
        nodes.insert(
            oid,
            Node {
                oid,
                object: format!("{schema}.{name}"),
                qname: format!("{}.{}", qi(&schema), qi(&name)),
                kind: kind.chars().next().unwrap_or('v'),
                owner,
                owner_bypass,
                invoker: r.get(6),
                readable: r.get(7),
                relations: r.get(8),
                functions: r.get(9),
                context_filter: predicate::mentions_context(&def, context_functions)
                    .then(|| where_clause(&def)),
            },
        );
    }
    // Which view owners are members of which table owners.
    let view_owners: Vec<String> = nodes
        .values()
        .map(|n| n.owner.clone())
        .chain(funcs.iter().map(|x| x.owner.clone()))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let table_owners: Vec<String> = tables
        .values()
        .map(|tb| tb.owner.clone())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let owners: HashSet<(String, String)> = if view_owners.is_empty() || table_owners.is_empty() {
        HashSet::new()
    } else {
        query(
            client,
            "SELECT a.rolname::text, b.rolname::text FROM pg_catalog.pg_roles a, pg_catalog.pg_roles b \
              WHERE a.rolname = ANY ($1::text[]) AND b.rolname = ANY ($2::text[]) AND a.oid <> b.oid \
                AND pg_has_role(a.oid, b.oid, 'USAGE')",
            &[&view_owners, &table_owners],
            "reading owner memberships",
        )
        .await?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    };
    let fn_by_oid: HashMap<u32, &Function> = funcs.iter().map(|x| (x.oid, x)).collect();
    let walk = Walk {
        nodes: &nodes,
        tables,
        funcs: &fn_by_oid,
        pols,
        owners: &owners,
        runtime: &t.role,
        budget: std::cell::Cell::new(WALK_BUDGET),
    };
    let mut entries: Vec<&Node> = nodes.values().filter(|n| n.readable).collect();
    entries.sort_by(|a, b| a.object.cmp(&b.object));
    for n in entries {
        walk.budget.set(WALK_BUDGET);
        let mut leaks = Vec::new();
        walk.visit(
            n.oid,
            (&t.role, t.role_super || t.role_bypass),
            false,
            &mut Vec::new(),
            &mut HashSet::new(),
            &mut leaks,
        );
        let mut reported: HashSet<(&'static str, String)> = HashSet::new();
        for l in leaks {
            if !reported.insert((l.rule, l.table.clone())) {
                continue;
            }
            let (msg, fix) = match l.rule {
                "foreign-table-readable" => (
                    format!("The runtime role can read foreign table {} (path: {}): {}.", l.table, l.path, l.why),
                    format!("REVOKE ALL ON {} FROM {}, PUBLIC;", n.qname, qi(&t.role)),
                ),
                "matview-tenant-data" => (
                    format!("The runtime role can read {} and through it the rows of tenant table {} (path: {}): {}; REFRESH fills it with what its owner sees, every tenant's rows.", n.object, l.table, l.path, l.why),
                    format!("REVOKE ALL ON {} FROM {}, PUBLIC;", n.qname, qi(&t.role)),
                ),
                _ => (
                    format!("The runtime role can read {} and through it every tenant's rows of {} (path: {}): {}.", n.object, l.table, l.path, l.why),
                    if n.kind == 'v' && t.version >= 150000 {
                        format!("ALTER VIEW {} SET (security_invoker = true);  -- and make every view and function on the path respect the caller", n.qname)
                    } else {
                        format!("REVOKE ALL ON {} FROM {}, PUBLIC;", n.qname, qi(&t.role))
                    },
                ),
            };
            f.push(Finding::new(l.rule, l.severity, &n.object, msg, fix));
        }
    }
    Ok(())
}

/// The top-level WHERE clause of a view definition (`pg_get_viewdef`), up to GROUP BY,
/// HAVING, ORDER BY, LIMIT or the end; the whole definition when it has none (then the
/// classification sees no tenant predicate).
fn where_clause(def: &str) -> String {
    let upper = def.to_ascii_uppercase();
    let bytes = upper.as_bytes();
    let mut depth = 0i32;
    let mut in_str = false;
    let mut start: Option<usize> = None;
    let mut end = def.len();
    for i in 0..bytes.len() {
        match bytes[i] {
            b'\'' => in_str = !in_str,
            b'(' if !in_str => depth += 1,
            b')' if !in_str => depth -= 1,
            _ => {}
        }
        let word_start = i == 0 || bytes[i - 1].is_ascii_whitespace();
        if in_str || depth != 0 || !word_start {
            continue;
        }
        match start {
            None if bytes[i..].starts_with(b"WHERE ") => start = Some(i + "WHERE ".len()),
            Some(_)
                if [
                    "GROUP BY", "HAVING", "ORDER BY", "LIMIT", "OFFSET", "WINDOW",
                ]
                .iter()
                .any(|k| bytes[i..].starts_with(k.as_bytes())) =>
            {
                end = i;
                break;
            }
            _ => {}
        }
    }
    match start {
        Some(s) if s <= end => def[s..end].trim().trim_end_matches(';').trim().to_owned(),
        _ => def.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::where_clause;

    #[test]
    fn top_level_where() {
        assert_eq!(
            where_clause(" SELECT t.id\n   FROM app.t\n  WHERE (t.org_id IN ( SELECT m.org_id\n           FROM m\n          WHERE (m.user_id = auth.uid())))\n  ORDER BY t.id;"),
            "(t.org_id IN ( SELECT m.org_id\n           FROM m\n          WHERE (m.user_id = auth.uid())))"
        );
        assert_eq!(where_clause(" SELECT 1;"), " SELECT 1;");
        assert_eq!(
            where_clause(" SELECT t.a\n   FROM t\n  WHERE (t.b = 'Größe'::text) GROUP BY t.a;"),
            "(t.b = 'Größe'::text)"
        );
    }
}
