//! User-defined functions: SECURITY DEFINER functions the runtime role may call, LEAKPROOF
//! functions and definer triggers.

use std::collections::{HashMap, HashSet};

use tokio_postgres::Client;

use crate::audit::{qi, query, Target};
use crate::model::{CheckError, Finding, Severity};
use crate::policies::Policy;
use crate::predicate::{self, Shape};
use crate::tables::Table;
use crate::Options;

/// A user-defined function.
#[derive(Debug, Clone)]
pub(crate) struct Function {
    pub oid: u32,
    pub qname: String,
    pub signature: String,
    pub secdef: bool,
    pub volatile: bool,
    pub leakproof: bool,
    pub language: String,
    pub body: String,
    pub owner: String,
    pub owner_bypass: bool,
    pub executable: bool,
    pub nargs: i16,
    pub name: String,
    /// One of tenancy's own context functions ([`CONTEXT_ENTRIES`], [`CONTEXT_READS`]),
    /// trusted by design.
    pub trusted: bool,
    /// Declared a narrow lookup by its comment ([`NARROW_LOOKUP_MARK`]) and not owned by
    /// the runtime role (which could otherwise declare its own functions narrow).
    pub narrow_lookup: bool,
    /// Whether it can hand values back: a set, a row, or a scalar other than `void`,
    /// `boolean`, an integer or a trigger.
    pub returns_data: bool,
    /// Whether it sets its own `search_path` (`SET search_path = …`).
    pub fixed_search_path: bool,
}

/// Lowercase names of the functions that read the caller's context: tenancy's own context
/// functions and every SQL or PL/pgSQL function whose body reads a setting or calls
/// `auth.uid()`/`auth.jwt()`. A policy comparing a column with a call of one of them keys
/// its table by that column.
pub(crate) fn context_functions(funcs: &[Function]) -> Vec<String> {
    let mut out: Vec<String> = funcs
        .iter()
        .filter(|x| {
            x.trusted
                || ((x.language == "sql" || x.language == "plpgsql")
                    && predicate::mentions_context(&x.body, &[]))
        })
        .map(|x| x.name.to_lowercase())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// tenancy's functions that enter a context (schema `tenancy`, comment
/// `tenancy:context-enter`): the token openings (the native `enter_pooled` behind a
/// transaction-mode pooler among them), and the PL/pgSQL session context's
/// initialisation and openings.
const CONTEXT_ENTRIES: &[&str] = &[
    "enter",
    "enter_read_only",
    "enter_pooled",
    "init_session",
    "enter_session",
    "enter_session_read_only",
];
/// tenancy's functions that read the context (comment `tenancy:context-read`): the one
/// policies call, and the PL/pgSQL check of a token-entered context it falls back to.
const CONTEXT_READS: &[&str] = &["current_tenant_id", "context_from_setting"];

/// A comment on a SECURITY DEFINER function that starts with this declares it a narrow
/// lookup: it finds one row by a key the caller already holds (a tenant id, slug, verified
/// domain, API key id and secret) and returns no more than that row. The catalog's
/// lookups carry it; `security-definer-ignores-context` does not report such functions.
pub(crate) const NARROW_LOOKUP_MARK: &str = "tenancy:narrow-lookup";

pub(crate) async fn functions(client: &Client, t: &Target) -> Result<Vec<Function>, CheckError> {
    let rows = t.rows(
        client,
        "SELECT p.oid, quote_ident(n.nspname) || '.' || quote_ident(p.proname), pg_get_function_identity_arguments(p.oid), \
                p.prosecdef, p.provolatile = 'v', p.proleakproof, l.lanname::text, coalesce(p.prosrc, ''), \
                pg_get_userbyid(p.proowner)::text, o.rolsuper OR o.rolbypassrls, has_function_privilege($1::oid, p.oid, 'EXECUTE'), \
                p.pronargs, p.proname::text, coalesce(obj_description(p.oid, 'pg_proc'), ''), pg_has_role($1::oid, p.proowner, 'MEMBER'), \
                n.nspname::text, \
                p.proretset OR p.prorettype NOT IN ('void'::regtype, 'bool'::regtype, 'int2'::regtype, 'int4'::regtype, \
                                                   'int8'::regtype, 'trigger'::regtype, 'event_trigger'::regtype), \
                EXISTS (SELECT 1 FROM unnest(coalesce(p.proconfig, '{}'::text[])) c WHERE c LIKE 'search\\_path=%') \
           FROM pg_catalog.pg_proc p \
           JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
           JOIN pg_catalog.pg_language l ON l.oid = p.prolang \
           JOIN pg_catalog.pg_roles o ON o.oid = p.proowner \
          WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND p.prokind IN ('f', 'p') \
            AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_proc'::regclass \
                             AND d.objid = p.oid AND d.deptype = 'e')",
        "reading functions",
    )
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let comment: String = r.get(13);
            let role_member_of_owner: bool = r.get(14);
            let schema: String = r.get(15);
            let name: String = r.get(12);
            let secdef: bool = r.get(3);
            let language: String = r.get(6);
            let body: String = r.get(7);
            let fixed_search_path: bool = r.get(17);
            // A context function in SQL or PL/pgSQL that runs as its owner without its own
            // search_path is trusted only while every name in it is schema-qualified.
            let shape_ok = !secdef
                || fixed_search_path
                || !(language == "sql" || language == "plpgsql")
                || (language == "plpgsql" && fully_qualified(&body));
            let trusted = schema == "tenancy"
                && !role_member_of_owner
                && shape_ok
                && ((CONTEXT_ENTRIES.contains(&name.as_str())
                    && comment == "tenancy:context-enter")
                    || (CONTEXT_READS.contains(&name.as_str())
                        && comment == "tenancy:context-read"));
            Function {
                oid: r.get(0),
                qname: r.get(1),
                signature: r.get(2),
                secdef,
                volatile: r.get(4),
                leakproof: r.get(5),
                language,
                body,
                owner: r.get(8),
                owner_bypass: r.get(9),
                executable: r.get(10),
                nargs: r.get(11),
                name,
                trusted,
                narrow_lookup: comment.starts_with(NARROW_LOOKUP_MARK) && !role_member_of_owner,
                returns_data: r.get(16),
                fixed_search_path,
            }
        })
        .collect())
}

/// Whether every name in a PL/pgSQL body is schema-qualified, so that running it under
/// any caller's search_path resolves the same objects: the shape of tenancy's PL/pgSQL
/// context functions, which run as their owner without `SET search_path`. Conservative:
/// anything it cannot read as qualified fails it. Outside string literals, comments and
/// quoted identifiers:
///
/// - operators only as `OPERATOR(pg_catalog.…)` (besides `:=`, `::`, a minus sign in
///   front of a number and, in a RAISE statement, `=` after an option name);
/// - a cast `::` names a `pg_catalog` type, `COLLATE` a `pg_catalog` collation;
/// - a name followed by `(` is qualified (`schema.function(`) or one of a few keywords;
///   a name followed by a string literal (a typed literal: `text 'x'`) is a keyword;
/// - a name after FROM or JOIN is qualified;
/// - each declaration's type is a `pg_catalog` type;
/// - no construct that looks `=` up by name (IN, BETWEEN, CASE, NULLIF, DISTINCT, LIKE,
///   ANY/ALL/SOME), no dynamic SQL (EXECUTE) and no writes (INSERT, UPDATE, DELETE, MERGE).
pub(crate) fn fully_qualified(body: &str) -> bool {
    #[derive(PartialEq, Debug)]
    enum Tok {
        Word(String),
        Num,
        Str,
        Punct(char),
        Op(String),
    }
    let chars: Vec<char> = body.chars().collect();
    let mut toks: Vec<Tok> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '-' && chars.get(i + 1) == Some(&'-') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            i += 2;
            while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                i += 1;
            }
            i += 2;
        } else if c == '\'' {
            // A string literal ('' inside is a quote). E'' and dollar quoting fail below.
            i += 1;
            loop {
                if i >= chars.len() {
                    return false;
                }
                if chars[i] == '\'' {
                    if chars.get(i + 1) == Some(&'\'') {
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                i += 1;
            }
            toks.push(Tok::Str);
        } else if c == '"' {
            let start = i + 1;
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += 1;
            }
            if i >= chars.len() {
                return false;
            }
            toks.push(Tok::Word(chars[start..i].iter().collect::<String>()));
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            toks.push(Tok::Word(
                chars[start..i].iter().collect::<String>().to_lowercase(),
            ));
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            toks.push(Tok::Num);
        } else if "(),;[].".contains(c) {
            toks.push(Tok::Punct(c));
            i += 1;
        } else if "+-*/<>=~!@#%^&|`?:".contains(c) {
            let start = i;
            while i < chars.len() && "+-*/<>=~!@#%^&|`?:".contains(chars[i]) {
                i += 1;
            }
            toks.push(Tok::Op(chars[start..i].iter().collect()));
        } else {
            // $ (dollar quoting, positional parameters) and anything else.
            return false;
        }
    }
    let word = |t: Option<&Tok>, w: &str| matches!(t, Some(Tok::Word(x)) if x == w);
    let qualified_after = |k: usize| {
        // toks[k] is a schema name followed by `.` and a name.
        matches!(toks.get(k), Some(Tok::Word(_)))
            && toks.get(k + 1) == Some(&Tok::Punct('.'))
            && matches!(toks.get(k + 2), Some(Tok::Word(_)))
    };
    const CALL_KEYWORDS: &[&str] = &[
        "operator", "if", "elsif", "and", "or", "not", "return", "then", "else", "select", "where",
        "from", "into", "exists", "when", "using", "perform",
    ];
    const LITERAL_KEYWORDS: &[&str] = &[
        "then", "else", "return", "and", "or", "not", "when", "if", "elsif",
    ];
    const FORBIDDEN: &[&str] = &[
        "in",
        "between",
        "case",
        "nullif",
        "distinct",
        "like",
        "ilike",
        "similar",
        "any",
        "all",
        "some",
        "execute",
        "insert",
        "update",
        "delete",
        "merge",
        "collation",
    ];
    const RAISE_OPTIONS: &[&str] = &[
        "errcode",
        "message",
        "detail",
        "hint",
        "column",
        "constraint",
        "datatype",
        "table",
        "schema",
    ];
    let mut in_declare = false;
    let mut in_raise = false;
    let mut decl_start = true;
    let mut k = 0;
    while k < toks.len() {
        let prev = if k > 0 { toks.get(k - 1) } else { None };
        match &toks[k] {
            Tok::Word(w) => {
                let after_dot = prev == Some(&Tok::Punct('.'));
                if w == "declare" && !after_dot {
                    in_declare = true;
                    decl_start = true;
                    k += 1;
                    continue;
                }
                if w == "begin" && !after_dot {
                    in_declare = false;
                }
                if w == "raise" && !after_dot {
                    in_raise = true;
                }
                if in_declare && decl_start {
                    // `name [CONSTANT] type …;`: the type is pg_catalog's.
                    let mut t = k + 1;
                    if word(toks.get(t), "constant") {
                        t += 1;
                    }
                    if !(word(toks.get(t), "pg_catalog") && qualified_after(t)) {
                        return false;
                    }
                    decl_start = false;
                    k += 1;
                    continue;
                }
                if !after_dot
                    && FORBIDDEN.contains(&w.as_str())
                    && !(w == "all" && word(prev, "reset"))
                {
                    return false;
                }
                if w == "collate"
                    && !(word(toks.get(k + 1), "pg_catalog") && qualified_after(k + 1))
                {
                    return false;
                }
                if (w == "from" || w == "join") && !qualified_after(k + 1) {
                    return false;
                }
                let qualified = after_dot;
                match toks.get(k + 1) {
                    Some(Tok::Punct('(')) if !qualified && !CALL_KEYWORDS.contains(&w.as_str()) => {
                        return false
                    }
                    Some(Tok::Str) if !qualified && !LITERAL_KEYWORDS.contains(&w.as_str()) => {
                        return false
                    }
                    _ => {}
                }
                if w == "operator" && !after_dot {
                    // OPERATOR(pg_catalog.<op>)
                    if !(toks.get(k + 1) == Some(&Tok::Punct('('))
                        && word(toks.get(k + 2), "pg_catalog")
                        && toks.get(k + 3) == Some(&Tok::Punct('.'))
                        && matches!(toks.get(k + 4), Some(Tok::Op(_)))
                        && toks.get(k + 5) == Some(&Tok::Punct(')')))
                    {
                        return false;
                    }
                    k += 6;
                    continue;
                }
            }
            Tok::Op(op) => match op.as_str() {
                ":=" => {}
                "::" => {
                    if !(word(toks.get(k + 1), "pg_catalog") && qualified_after(k + 1)) {
                        return false;
                    }
                }
                "-" if matches!(toks.get(k + 1), Some(Tok::Num))
                    && matches!(prev, Some(Tok::Punct('(')) | Some(Tok::Punct(','))) => {}
                "=" if in_raise
                    && k >= 2
                    && matches!(toks.get(k - 2), Some(Tok::Word(_)) | Some(Tok::Punct(',')))
                    && matches!(prev, Some(Tok::Word(w)) if RAISE_OPTIONS.contains(&w.as_str())) => {
                }
                _ => return false,
            },
            Tok::Punct(';') => {
                decl_start = true;
                in_raise = false;
            }
            _ => {}
        }
        k += 1;
    }
    true
}

pub(crate) fn function_rules(
    t: &Target,
    tables: &[Table],
    funcs: &[Function],
    reported: &HashSet<u32>,
    f: &mut Vec<Finding>,
) {
    for func in funcs {
        let obj = format!("{}({})", func.qname.replace('"', ""), func.signature);
        let qf = format!("{}({})", func.qname, func.signature);
        if func.leakproof {
            f.push(Finding::new(
                "leakproof-function",
                Severity::Warning,
                &obj,
                format!("{obj} is marked LEAKPROOF, so PostgreSQL may run it on rows before the policy filters them; if it can raise errors or notices that depend on its input, it leaks other tenants' values."),
                format!("ALTER FUNCTION {qf} NOT LEAKPROOF;"),
            ));
        }
        if func.secdef
            && func.executable
            && !func.trusted
            && !func.fixed_search_path
            && (func.language == "sql" || func.language == "plpgsql")
        {
            f.push(Finding::new(
                "security-definer-search-path",
                Severity::Warning,
                &obj,
                format!("SECURITY DEFINER function {obj} (owner {}) is executable by {} and does not set its own search_path: the names in its body resolve through the caller's search_path, so a caller who can create objects in any schema (pg_temp included) makes it run their operator or function with the owner's privileges.", func.owner, t.role),
                format!("ALTER FUNCTION {qf} SET search_path = pg_catalog, pg_temp;  -- and schema-qualify the names in its body"),
            ));
        }
        // `security-definer-ignores-context` already reported it, more precisely; a
        // declared narrow lookup is reviewed by whoever wrote its comment.
        if !func.secdef
            || !func.executable
            || func.trusted
            || func.narrow_lookup
            || reported.contains(&func.oid)
        {
            continue;
        }
        let body = func.body.to_lowercase();
        let reads: Vec<&Table> = tables
            .iter()
            .filter(|tb| predicate::references(&body, &tb.name.to_lowercase()))
            .collect();
        let bypassing: Vec<&&Table> = reads
            .iter()
            .filter(|tb| func.owner_bypass || !tb.rls || (tb.owner == func.owner && !tb.force))
            .collect();
        let (sev, msg) = if let Some(tb) = bypassing.first() {
            (
                Severity::Error,
                format!("SECURITY DEFINER function {obj} is executable by {} and reads tenant table {} as its owner {}, who bypasses row-level security on it: callers get other tenants' rows.", t.role, tb.object(), func.owner),
            )
        } else {
            (
                Severity::Warning,
                format!("SECURITY DEFINER function {obj} (owner {}) is executable by {}; it runs with its owner's privileges, so any tenant table it touches is read as the owner.", func.owner, t.role),
            )
        };
        f.push(Finding::new(
            "security-definer-function",
            sev,
            &obj,
            msg,
            format!("ALTER FUNCTION {qf} SECURITY INVOKER;  -- or REVOKE EXECUTE ON FUNCTION {qf} FROM {}, PUBLIC;", qi(&t.role)),
        ));
    }
}

/// A table a definer function touches, as its owner sees it.
pub(crate) struct Touched {
    /// `schema.table`.
    object: String,
    /// Whether the function's owner sees rows beyond the caller's tenant context there:
    /// it bypasses RLS, the table has none (or not forced for its owner), or a permissive
    /// policy for the owner (or PUBLIC) is not a tenant predicate.
    unbounded: bool,
    /// A table of tenancy's control catalog (not tenant data; see `catalog_rules`).
    catalog: bool,
}

/// `security-definer-ignores-context`: a SECURITY DEFINER function the runtime role may
/// execute (directly or through PUBLIC) whose body reads or writes a tenant table (or, in
/// a tenancy-managed database, a catalog table with a tenant column) and never mentions the
/// tenant context: the context function (`current_tenant_id`, or a function the tenant
/// policies call) or a context setting. Such a function acts for any caller, injected SQL
/// with no context included.
///
/// Severity: `error` when it can hand back values (rows, records, text…) from a tenant
/// table whose rows its owner sees beyond the context: any caller reads other tenants'
/// data with one ordinary call (the severity contract's error). `warning` otherwise: it
/// only writes, returns nothing but a flag or a count, touches only catalog tables, or
/// row-level security still binds its owner, so what leaks depends on the arguments or on
/// a policy staying as it is. Not reported: tenancy's own context functions, functions
/// declared narrow lookups ([`NARROW_LOOKUP_MARK`]), and C functions (no body to read).
///
/// Returns the functions it reported, which `function_rules` then skips.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn definer_context_rules(
    client: &Client,
    opts: &Options,
    t: &Target,
    tables: &[Table],
    pols: &[Policy],
    funcs: &[Function],
    gucs: &[String],
    f: &mut Vec<Finding>,
) -> Result<HashSet<u32>, CheckError> {
    let mut reported = HashSet::new();
    let candidates: Vec<&Function> = funcs
        .iter()
        .filter(|x| {
            x.secdef
                && x.executable
                && !x.trusted
                && !x.narrow_lookup
                && (x.language == "sql" || x.language == "plpgsql")
        })
        .collect();
    if candidates.is_empty() {
        return Ok(reported);
    }
    let col = opts
        .tenant_columns
        .first()
        .map(String::as_str)
        .unwrap_or("tenant_id");
    // What counts as referring to the tenant context: the context function, the settings
    // policies read, and any function a tenant policy calls.
    let fn_names: HashMap<u32, &str> = funcs.iter().map(|x| (x.oid, x.name.as_str())).collect();
    let mut context_words: Vec<String> = vec!["current_tenant_id".into()];
    context_words.extend(gucs.iter().cloned());
    context_words.extend(
        context_functions(funcs)
            .into_iter()
            .map(|n| format!("{n}(")),
    );
    for p in pols {
        for oid in &p.functions {
            if let Some(n) = fn_names.get(oid) {
                context_words.push(n.to_lowercase());
            }
        }
    }
    context_words.sort();
    context_words.dedup();
    let catalog: Vec<(String, String)> = if t.managed {
        query(
            client,
            "SELECT n.nspname::text, c.relname::text FROM pg_catalog.pg_class c \
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
               JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attname = ANY ($1::text[]) AND NOT a.attisdropped \
              WHERE n.nspname = 'tenancy_catalog' AND c.relkind IN ('r', 'p') ORDER BY 2",
            &[&opts.tenant_columns],
            "listing catalog tables with a tenant column",
        )
        .await?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    } else {
        Vec::new()
    };
    for func in candidates {
        let body = func.body.to_lowercase();
        if context_words.iter().any(|w| body.contains(w.as_str())) {
            continue;
        }
        let mut touched: Vec<Touched> = tables
            .iter()
            .filter(|tb| predicate::references(&body, &tb.name.to_lowercase()))
            .map(|tb| {
                let owner_policy_open = pols.iter().any(|p| {
                    p.table == tb.oid
                        && p.permissive
                        && p.cmd != "a"
                        && (p.roles.iter().any(|r| r == "PUBLIC" || *r == func.owner))
                        && p.functions.is_empty()
                        && p.using
                            .as_deref()
                            .is_some_and(|u| predicate::classify(u, &tb.col_name) != Shape::Tenant)
                });
                Touched {
                    object: tb.object(),
                    unbounded: func.owner_bypass
                        || !tb.rls
                        || (tb.owner == func.owner && !tb.force)
                        || owner_policy_open,
                    catalog: false,
                }
            })
            .collect();
        touched.extend(
            catalog
                .iter()
                .filter(|(_, name)| predicate::references(&body, &name.to_lowercase()))
                .map(|(schema, name)| Touched {
                    object: format!("{schema}.{name}"),
                    unbounded: true,
                    catalog: true,
                }),
        );
        if touched.is_empty() {
            continue;
        }
        let obj = format!("{}({})", func.qname.replace('"', ""), func.signature);
        let qf = format!("{}({})", func.qname, func.signature);
        let list = touched
            .iter()
            .map(|x| x.object.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let leaking = touched
            .iter()
            .find(|x| x.unbounded && !x.catalog && func.returns_data);
        let (sev, msg) = match leaking {
            Some(x) => (
                Severity::Error,
                format!(
                    "SECURITY DEFINER function {obj} is executable by {role} and hands back data from tenant table {table} without referring to the tenant context: it runs as {owner}, who sees every tenant's rows there, so any caller (injected SQL with no context included) gets other tenants' rows.",
                    role = t.role,
                    table = x.object,
                    owner = func.owner
                ),
            ),
            None => (
                Severity::Warning,
                format!(
                    "SECURITY DEFINER function {obj} is executable by {role} and reads or writes {list} without referring to the tenant context: it acts on whatever rows its arguments name, for any caller, injected SQL with no context included{how}.",
                    role = t.role,
                    how = if touched.iter().any(|x| x.unbounded) {
                        format!(", as {}, who sees every tenant's rows there", func.owner)
                    } else {
                        " (row-level security still binds its owner, so this holds only as long as the policies do)".to_owned()
                    }
                ),
            ),
        };
        f.push(Finding::new(
            "security-definer-ignores-context",
            sev,
            &obj,
            format!("{msg} Check the tenant inside it (… WHERE {c} = (SELECT tenancy.current_tenant_id())), grant it only to a role of its own (as tenancy's job queue does with tenancy_worker), or, for a lookup of one row by a key the caller already holds, declare it with COMMENT ON FUNCTION {qf} IS '{NARROW_LOOKUP_MARK}: …'.", c = qi(col)),
            format!("REVOKE EXECUTE ON FUNCTION {qf} FROM {}, PUBLIC;  -- and GRANT EXECUTE to a role of its own", qi(&t.role)),
        ));
        reported.insert(func.oid);
    }
    Ok(reported)
}

/// The triggers whose function is SECURITY DEFINER: table, trigger name, function,
/// function owner.
const DEFINER_TRIGGERS: &str =
    "SELECT t.tgrelid, t.tgname::text, quote_ident(n.nspname) || '.' || quote_ident(p.proname), pg_get_userbyid(p.proowner)::text \
       FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid \
       JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
      WHERE NOT t.tgisinternal AND p.prosecdef";

pub(crate) async fn trigger_rules(
    client: &Client,
    tables: &HashMap<u32, &Table>,
    f: &mut Vec<Finding>,
) -> Result<(), CheckError> {
    let rows = query(client, DEFINER_TRIGGERS, &[], "reading triggers").await?;
    for r in rows {
        let rel: u32 = r.get(0);
        let Some(tb) = tables.get(&rel) else { continue };
        let tg: String = r.get(1);
        let func: String = r.get(2);
        let owner: String = r.get(3);
        f.push(Finding::new(
            "trigger-security-definer",
            Severity::Warning,
            tb.object(),
            format!("Trigger {tg} on {} runs SECURITY DEFINER function {func} as {owner}: whatever it reads or writes is not limited to the writing tenant unless it checks the tenant itself.", tb.object()),
            format!("ALTER FUNCTION {func}() SECURITY INVOKER;"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::fully_qualified;

    const OK: &str = "
DECLARE
    p pg_catalog.text[] := pg_catalog.string_to_array(token, '.');  -- a comment's 'quote
    n pg_catalog.int4;
BEGIN
    /* RESET ALL first */
    RESET ALL;
    SELECT c.n INTO n FROM tenancy_private.t c WHERE c.k OPERATOR(pg_catalog.=) p[2];
    IF pg_catalog.length(p[1]) OPERATOR(pg_catalog.<>) 2 OR NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '28000', MESSAGE = 'it''s refused';
    END IF;
    RETURN pg_catalog.left(token, -65)::pg_catalog.uuid COLLATE pg_catalog.\"C\";
END
";

    #[test]
    fn accepts_a_fully_qualified_body() {
        assert!(fully_qualified(OK));
    }

    #[test]
    fn refuses_every_name_that_resolves_through_the_search_path() {
        for (from, to) in [
            ("OPERATOR(pg_catalog.=) p[2]", "= p[2]"),
            ("OPERATOR(pg_catalog.=) p[2]", "OPERATOR(public.=) p[2]"),
            ("pg_catalog.length(p[1])", "length(p[1])"),
            ("::pg_catalog.uuid", "::uuid"),
            ("n pg_catalog.int4;", "n int4;"),
            ("FROM tenancy_private.t c", "FROM t c"),
            ("COLLATE pg_catalog.\"C\"", "COLLATE \"C\""),
            ("OR NOT FOUND", "OR p[1] IN ('v1')"),
            ("OR NOT FOUND", "OR p[1] BETWEEN 'a' AND 'b'"),
            ("OR NOT FOUND", "OR text 'x' OPERATOR(pg_catalog.=) p[1]"),
            ("RESET ALL;", "EXECUTE 'SELECT 1';"),
            ("RESET ALL;", "UPDATE tenancy_private.t SET n = 1;"),
            ("RESET ALL;", "PERFORM $1;"),
            (
                "WHERE c.k OPERATOR(pg_catalog.=) p[2]",
                "WHERE c.message = p[2]",
            ),
        ] {
            let body = OK.replacen(from, to, 1);
            assert_ne!(body, OK, "{from}");
            assert!(!fully_qualified(&body), "accepted: {to}");
        }
    }
}
