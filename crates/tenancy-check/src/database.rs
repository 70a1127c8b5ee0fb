//! Database-wide rules: schema and database privileges, publications, large objects.

use std::collections::HashMap;

use tokio_postgres::Client;

use crate::audit::{qi, query, Target};
use crate::model::{CheckError, Finding, Severity};
use crate::tables::{is_tenant_schema, Table};

pub(crate) async fn privilege_rules(
    client: &Client,
    t: &Target,
    f: &mut Vec<Finding>,
) -> Result<(), CheckError> {
    let rows = t.rows(
        client,
        "SELECT n.nspname::text, has_schema_privilege($1::oid, n.oid, 'CREATE'), has_schema_privilege($1::oid, n.oid, 'USAGE'), \
                EXISTS (SELECT 1 FROM aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a WHERE a.grantee = 0 AND a.privilege_type = 'USAGE'), \
                coalesce(obj_description(n.oid, 'pg_namespace'), ''), \
                ARRAY(SELECT c.relname::text FROM pg_catalog.pg_class c WHERE c.relnamespace = n.oid AND c.relkind IN ('r', 'p', 'v', 'm', 'f') \
                        AND (has_table_privilege($1::oid, c.oid, 'SELECT') OR has_any_column_privilege($1::oid, c.oid, 'SELECT') \
                             OR has_table_privilege($1::oid, c.oid, 'INSERT') OR has_table_privilege($1::oid, c.oid, 'UPDATE') \
                             OR has_table_privilege($1::oid, c.oid, 'DELETE')) ORDER BY 1) \
           FROM pg_catalog.pg_namespace n \
          WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1",
        "reading schema privileges",
    )
    .await?;
    let mut tenant_schemas = Vec::new();
    for r in &rows {
        let s: String = r.get(0);
        let create: bool = r.get(1);
        let usage: bool = r.get(2);
        let public_usage: bool = r.get(3);
        let comment: String = r.get(4);
        let reachable: Vec<String> = r.get(5);
        if create && !t.role_super {
            f.push(Finding::new(
                "schema-create",
                Severity::Warning,
                &s,
                format!("The runtime role may CREATE objects in schema {s}: injected SQL can create functions (e.g. LEAKPROOF-looking helpers, operators that shadow built-ins through search_path) or tables that capture other tenants' data through triggers and views."),
                format!("REVOKE CREATE ON SCHEMA {} FROM {}, PUBLIC;", qi(&s), qi(&t.role)),
            ));
        }
        if is_tenant_schema(&s, &comment) && (usage || public_usage) {
            let reads = if usage && !t.role_super {
                reachable
            } else {
                Vec::new()
            };
            tenant_schemas.push((s, public_usage, reads));
        }
    }
    // The runtime role can use tables in several tenant schemas: it reads or writes more
    // than one tenant's rows with ordinary SQL.
    let reading = tenant_schemas
        .iter()
        .filter(|(_, _, r)| !r.is_empty())
        .count();
    if tenant_schemas.len() > 1 {
        for (s, public, reads) in &tenant_schemas {
            let sev = if reading > 1 && !reads.is_empty() {
                Severity::Error
            } else {
                Severity::Warning
            };
            f.push(Finding::new(
                "schema-cross-tenant",
                sev,
                s,
                if sev == Severity::Error {
                    format!("The runtime role {} can use tables of {reading} tenant schemas, {s} among them ({} there): with schema-per-tenant placement, each tenant's schema must be reachable only by that tenant's role, yet one `SELECT … FROM {s}.…` reads this tenant's rows from any other tenant's session.", t.role, reads.join(", "))
                } else {
                    format!("{} has USAGE on {} tenant schemas ({s} among them): with schema-per-tenant placement, isolation then rests on search_path alone, and `SET search_path = another_tenant` crosses tenants.", if *public { "PUBLIC" } else { t.role.as_str() }, tenant_schemas.len())
                },
                format!("REVOKE ALL ON SCHEMA {} FROM PUBLIC{};  -- grant USAGE only to that tenant's own role", qi(s), if *public { String::new() } else { format!(", {}", qi(&t.role)) }),
            ));
        }
    }
    let rows = t.rows(
        client,
        "SELECT d.datname::text, d.datname = current_database(), has_database_privilege($1::oid, d.oid, 'TEMP') AND d.datname = current_database(), \
                EXISTS (SELECT 1 FROM aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a WHERE a.grantee = 0 AND a.privilege_type = 'CONNECT') \
           FROM pg_catalog.pg_database d WHERE d.datallowconn AND NOT d.datistemplate ORDER BY 1",
        "reading database privileges",
    )
    .await?;
    for r in rows {
        let name: String = r.get(0);
        let current: bool = r.get(1);
        let temp: bool = r.get(2);
        let public_connect: bool = r.get(3);
        if temp && !t.role_super {
            f.push(Finding::new(
                "database-temp",
                Severity::Info,
                &name,
                format!("The runtime role may create temporary tables in {name}. Temporary objects shadow others through pg_temp in search_path and survive across pooled transactions."),
                format!("REVOKE TEMPORARY ON DATABASE {} FROM PUBLIC, {};", qi(&name), qi(&t.role)),
            ));
        }
        if public_connect && (current || name != "postgres") {
            f.push(Finding::new(
                "database-public-connect",
                if current { Severity::Info } else { Severity::Warning },
                &name,
                if current {
                    format!("PUBLIC may connect to {name} (the default for new databases): every role in the cluster can log in to it.")
                } else {
                    format!("PUBLIC may connect to database {name}: with database-per-tenant placement any tenant's credentials open every other tenant's database.")
                },
                format!("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC;", qi(&name)),
            ));
        }
    }
    Ok(())
}

pub(crate) async fn misc_rules(
    client: &Client,
    t: &Target,
    tables: &HashMap<u32, &Table>,
    f: &mut Vec<Finding>,
) -> Result<(), CheckError> {
    // Publications.
    let sql = if t.version >= 150000 {
        "SELECT p.pubname::text, p.puballtables, pr.prrelid, pr.prqual IS NOT NULL, \
                ARRAY(SELECT c.oid FROM pg_catalog.pg_publication_namespace pn JOIN pg_catalog.pg_class c ON c.relnamespace = pn.pnnspid WHERE pn.pnpubid = p.oid) \
           FROM pg_catalog.pg_publication p LEFT JOIN pg_catalog.pg_publication_rel pr ON pr.prpubid = p.oid"
    } else {
        "SELECT p.pubname::text, p.puballtables, pr.prrelid, false, '{}'::oid[] \
           FROM pg_catalog.pg_publication p LEFT JOIN pg_catalog.pg_publication_rel pr ON pr.prpubid = p.oid"
    };
    let rows = query(client, sql, &[], "reading publications").await?;
    for r in rows {
        let pubname: String = r.get(0);
        let all: bool = r.get(1);
        let rel: Option<u32> = r.get(2);
        let filtered: bool = r.get(3);
        let in_schemas: Vec<u32> = r.get(4);
        let mut hit: Vec<String> = Vec::new();
        if all {
            hit.extend(tables.values().map(|tb| tb.object()));
        }
        if let Some(tb) = rel.and_then(|o| tables.get(&o)) {
            if !filtered {
                hit.push(tb.object());
            }
        }
        hit.extend(
            in_schemas
                .iter()
                .filter_map(|o| tables.get(o))
                .map(|tb| tb.object()),
        );
        hit.sort();
        hit.dedup();
        for obj in hit {
            f.push(Finding::new(
                "publication-no-row-filter",
                Severity::Warning,
                &obj,
                format!("Publication {pubname} replicates tenant table {obj} without a row filter: logical decoding ignores row-level security, so every subscriber receives every tenant's rows."),
                format!("ALTER PUBLICATION {} SET TABLE {} WHERE (<tenant or region filter>);", qi(&pubname), obj),
            ));
        }
    }
    // Large objects.
    let rows = query(client, "SELECT (SELECT count(*) FROM pg_catalog.pg_largeobject_metadata), current_setting('lo_compat_privileges')", &[], "reading large objects").await?;
    if let Some(r) = rows.first() {
        let n: i64 = r.get(0);
        let compat: String = r.get(1);
        if n > 0 || compat == "on" {
            f.push(Finding::new(
                "large-objects",
                Severity::Warning,
                &t.database,
                format!("{}{}Large objects are outside row-level security: their OIDs are guessable and access depends only on per-object grants.", if n > 0 { format!("{n} large object(s) exist in {}. ", t.database) } else { String::new() }, if compat == "on" { "lo_compat_privileges is on, which disables large-object privilege checks entirely. " } else { "" }),
                "ALTER SYSTEM SET lo_compat_privileges = off;  -- and move the data to bytea columns of tenant tables".to_owned(),
            ));
        }
    }
    Ok(())
}
