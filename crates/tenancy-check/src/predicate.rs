//! Text analysis of deparsed policy predicates (`pg_get_expr`) and function bodies.
//!
//! This is heuristic by nature: it recognises the shapes that leak in practice (always-true,
//! `OR`-widened, fail-open `IS NULL OR`) and the performance shape of context calls. The
//! active probe is the behavioural cross-check.

/// What a predicate does to tenant isolation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Shape {
    /// Restricts rows by the tenant column without an obvious hole.
    Tenant,
    /// Always true (`true`, `1 = 1`, `x = x`, `... OR true`).
    AlwaysTrue,
    /// `x IS NULL OR ...`: passes everything when the context is unset.
    FailOpen,
    /// `tenant = ctx OR something`: other tenants' rows pass through the other branch.
    OrWidened {
        /// Whether every branch references the tenant column (a milder case).
        all_branches_tenant: bool,
    },
    /// Does not mention the tenant column at all.
    NoTenantColumn,
    /// Mentions the tenant column without comparing it with anything that depends on the
    /// caller (`tenant_id IS NOT NULL`, `org_id IN (SELECT org_id FROM memberships)`).
    Unbound,
}

impl Shape {
    /// What the shape lets through, for messages.
    pub(crate) fn describe(&self) -> &'static str {
        match self {
            Shape::Tenant => "a tenant predicate",
            Shape::AlwaysTrue => "always true",
            Shape::FailOpen => "fails open when the context is unset",
            Shape::OrWidened { .. } => "widened with OR",
            Shape::NoTenantColumn => "does not mention the tenant key",
            Shape::Unbound => "never compares the tenant key with the caller",
        }
    }
}

/// Whether `c` can be part of an SQL identifier.
fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '$'
}

/// Removes parentheses that enclose the whole expression.
pub(crate) fn strip_outer(expr: &str) -> &str {
    let mut s = expr.trim();
    loop {
        if !(s.starts_with('(') && s.ends_with(')')) {
            return s;
        }
        // The first '(' must close at the very end.
        let mut depth = 0i32;
        let mut in_str = false;
        let mut closes_at_end = true;
        for (i, c) in s.char_indices() {
            match c {
                '\'' => in_str = !in_str,
                '(' if !in_str => depth += 1,
                ')' if !in_str => {
                    depth -= 1;
                    if depth == 0 && i != s.len() - 1 {
                        closes_at_end = false;
                        break;
                    }
                }
                _ => {}
            }
        }
        if !closes_at_end {
            return s;
        }
        s = s[1..s.len() - 1].trim();
    }
}

/// Splits at a keyword (`OR`/`AND`) at parenthesis depth 0, outside string literals.
pub(crate) fn split_top(expr: &str, keyword: &str) -> Vec<String> {
    let upper = expr.to_ascii_uppercase();
    let kw = format!(" {} ", keyword.to_ascii_uppercase());
    let bytes = expr.as_bytes();
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut in_str = false;
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'\'' => in_str = !in_str,
            b'(' if !in_str => depth += 1,
            b')' if !in_str => depth -= 1,
            _ => {}
        }
        if depth == 0 && !in_str && upper.as_bytes()[i..].starts_with(kw.as_bytes()) {
            parts.push(expr[start..i].trim().to_owned());
            i += kw.len();
            start = i;
            continue;
        }
        i += 1;
    }
    parts.push(expr[start..].trim().to_owned());
    parts
}

/// Whether `expr` mentions identifier `col` (as a whole word or quoted).
pub(crate) fn references(expr: &str, col: &str) -> bool {
    let lower = expr.to_lowercase();
    let col_l = col.to_lowercase();
    if lower.contains(&format!("\"{col_l}\"")) {
        return true;
    }
    let mut from = 0;
    while let Some(pos) = lower[from..].find(&col_l) {
        let at = from + pos;
        let before = lower[..at].chars().next_back();
        let after = lower[at + col_l.len()..].chars().next();
        if !before.is_some_and(ident_char) && !after.is_some_and(ident_char) {
            return true;
        }
        from = at + col_l.len();
    }
    false
}

/// Whether one conjunct/disjunct is trivially true.
fn atom_true(atom: &str) -> bool {
    let a = strip_outer(atom).to_lowercase();
    if a == "true" || a == "'t'::boolean" || a == "'true'::boolean" {
        return true;
    }
    let sides = split_top(&a, "=");
    if sides.len() == 2 {
        let l = strip_outer(&sides[0]);
        let r = strip_outer(&sides[1]);
        return l == r;
    }
    false
}

/// Whether the whole expression is trivially true.
pub(crate) fn always_true(expr: &str) -> bool {
    let e = strip_outer(expr);
    let ors = split_top(e, "OR");
    if ors.iter().any(|d| atom_true(d)) {
        return true;
    }
    let ands = split_top(e, "AND");
    ands.len() > 1 && ands.iter().all(|c| always_true(c))
}

/// Classifies a policy predicate for tenant column `col`.
pub(crate) fn classify(expr: &str, col: &str) -> Shape {
    if always_true(expr) {
        return Shape::AlwaysTrue;
    }
    let e = strip_outer(expr);
    let ors = split_top(e, "OR");
    if ors.len() > 1 {
        if ors
            .iter()
            .any(|d| strip_outer(d).to_ascii_uppercase().ends_with("IS NULL"))
        {
            return Shape::FailOpen;
        }
        // `<context> IS NOT NULL OR …`: the inverted NULL test passes every row as soon as
        // any context is set.
        if ors.iter().any(|d| {
            let d = strip_outer(d);
            d.to_ascii_uppercase().ends_with("IS NOT NULL") && mentions_context(d, &[])
        }) {
            return Shape::AlwaysTrue;
        }
        return Shape::OrWidened {
            all_branches_tenant: ors.iter().all(|d| references(d, col)),
        };
    }
    if !references(e, col) {
        return Shape::NoTenantColumn;
    }
    if coalesce_fails_open(e, col) {
        return Shape::FailOpen;
    }
    if bound_columns(e, "", &[], false).iter().any(|c| c == col) {
        Shape::Tenant
    } else {
        Shape::Unbound
    }
}

/// Calls and words that make an expression depend on who is asking: settings, the
/// identity functions of common frameworks (Supabase's `auth.uid()`/`auth.jwt()`), tenancy's
/// context and the session's role.
const CONTEXT_MARKERS: &[&str] = &[
    "current_setting(",
    "current_tenant_id(",
    "auth.uid(",
    "auth.jwt(",
    "auth.role(",
    "current_user",
    "session_user",
    "current_role",
];

/// Whether `expr` depends on the caller: one of [`CONTEXT_MARKERS`] or a call to one of
/// `functions` (lowercase names of functions known to read the context).
pub(crate) fn mentions_context(expr: &str, functions: &[String]) -> bool {
    let lower = expr.to_lowercase();
    CONTEXT_MARKERS.iter().any(|m| lower.contains(m))
        || functions.iter().any(|f| {
            unwrapped_calls(&lower, f) > 0
                || lower.contains(&format!(".{f}("))
                || lower.contains(&format!(" {f}("))
                || lower.contains(&format!("({f}("))
        })
}

/// Whether `expr` contains a call of any function (`name(`), other than a cast or `IN`/`ANY`.
fn has_call(expr: &str) -> bool {
    let lower = expr.to_lowercase();
    let bytes = lower.as_bytes();
    for (i, c) in bytes.iter().enumerate() {
        if *c != b'(' || i == 0 {
            continue;
        }
        let before = lower[..i].trim_end();
        let word: String = before
            .chars()
            .rev()
            .take_while(|c| ident_char(*c) || *c == '.')
            .collect::<String>()
            .chars()
            .rev()
            .collect();
        let last = word.rsplit('.').next().unwrap_or("");
        if !last.is_empty()
            && !matches!(
                last,
                "in" | "any"
                    | "all"
                    | "exists"
                    | "and"
                    | "or"
                    | "not"
                    | "select"
                    | "where"
                    | "from"
            )
            && !before.ends_with("::")
        {
            return true;
        }
    }
    false
}

/// The column an expression side names, if it is just a column (`col`, `t.col`, `"col"`,
/// `(col)::text`), lowercase without quotes.
fn column_of(side: &str) -> Option<String> {
    let mut s = strip_outer(side).trim();
    // Drop casts: `(tenant_id)::text`.
    while let Some(pos) = s.rfind("::") {
        if s[pos + 2..]
            .chars()
            .all(|c| ident_char(c) || c == ' ' || c == '"' || c == '.' || c == '[' || c == ']')
        {
            s = strip_outer(&s[..pos]).trim();
        } else {
            break;
        }
    }
    let last = s.rsplit('.').next()?.trim();
    let last = last.trim_matches('"');
    let qualified_ok = s.split('.').all(|part| {
        let p = part.trim().trim_matches('"');
        !p.is_empty() && p.chars().all(ident_char)
    });
    if !qualified_ok || last.is_empty() || last.chars().next().is_some_and(|c| c.is_ascii_digit()) {
        return None;
    }
    let l = last.to_lowercase();
    if matches!(
        l.as_str(),
        "true" | "false" | "null" | "current_user" | "session_user" | "current_role" | "user"
    ) {
        return None;
    }
    Some(l)
}

/// Columns of the policy's table that `expr` compares with a value depending on the caller:
/// `col = <context>`, `<context> = col`, `col IN (<subquery using the context>)`,
/// `col = ANY (<context>)`, `EXISTS (… <table>.col … <context> …)`, looked for in every
/// conjunct and disjunct. `strict`: the other side must mention the context
/// ([`mentions_context`] with `functions`); otherwise any function call there counts for
/// `=` (a context function the checker does not know), while `IN`/`EXISTS` subqueries
/// still need the context or a call.
pub(crate) fn bound_columns(
    expr: &str,
    table: &str,
    functions: &[String],
    strict: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    let e = strip_outer(expr);
    let ors = split_top(e, "OR");
    let atoms: Vec<String> = if ors.len() > 1 {
        ors
    } else {
        let ands = split_top(e, "AND");
        if ands.len() > 1 {
            ands
        } else {
            Vec::new()
        }
    };
    if !atoms.is_empty() {
        for a in atoms {
            for c in bound_columns(&a, table, functions, strict) {
                if !out.contains(&c) {
                    out.push(c);
                }
            }
        }
        return out;
    }
    let dep = |other: &str| -> bool {
        mentions_context(other, functions) || (!strict && has_call(other))
    };
    let upper = e.to_ascii_uppercase();
    if upper.starts_with("EXISTS") || upper.starts_with("NOT EXISTS") {
        if !upper.starts_with("NOT") && dep(e) {
            // Columns of the outer table, named `<table>.col` inside the subquery; with no
            // table name, every qualified column.
            let lower = e.to_lowercase();
            let pat = if table.is_empty() {
                ".".to_owned()
            } else {
                format!("{}.", table.to_lowercase())
            };
            let mut from = 0;
            while let Some(pos) = lower[from..].find(&pat) {
                let at = from + pos;
                let before = lower[..at].chars().next_back();
                let rest = &lower[at + pat.len()..];
                let col: String = rest.chars().take_while(|c| ident_char(*c)).collect();
                let qualified_ok = if table.is_empty() {
                    before.is_some_and(ident_char)
                } else {
                    !before.is_some_and(|c| ident_char(c) || c == '.')
                };
                if qualified_ok && !col.is_empty() && !out.contains(&col) {
                    out.push(col);
                }
                from = at + pat.len();
            }
        }
        return out;
    }
    for kw in ["IN", "= ANY"] {
        let parts = split_top(e, kw);
        if parts.len() == 2 {
            if let Some(c) = column_of(&parts[0]) {
                if mentions_context(&parts[1], functions) || (!strict && has_call(&parts[1])) {
                    out.push(c);
                }
            }
            return out;
        }
    }
    let sides = split_top(e, "=");
    if sides.len() == 2 {
        for (l, r) in [(&sides[0], &sides[1]), (&sides[1], &sides[0])] {
            if let Some(c) = column_of(l) {
                if column_of(r).is_none() && dep(r) && !out.contains(&c) {
                    out.push(c);
                }
            }
        }
    }
    out
}

/// `coalesce(<context>, col) = col` and `col = coalesce(<context>, col)`: true for every
/// row while the context is unset.
fn coalesce_fails_open(expr: &str, col: &str) -> bool {
    let lower = expr.to_lowercase();
    let mut from = 0;
    while let Some(pos) = lower[from..].find("coalesce(") {
        let at = from + pos + "coalesce(".len();
        // The arguments up to the matching parenthesis.
        let mut depth = 1i32;
        let mut end = lower.len();
        for (i, c) in lower[at..].char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = at + i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let args = split_commas(&lower[at..end]);
        if args.len() > 1
            && args[1..]
                .iter()
                .any(|a| column_of(a).as_deref() == Some(col))
        {
            return true;
        }
        from = at;
    }
    false
}

/// Whether `expr` takes identity from data the user can edit themselves: Supabase's
/// `user_metadata` claim or the `raw_user_meta_data` column (any signed-up user writes
/// them with `auth.updateUser`).
pub(crate) fn user_controlled(expr: &str) -> bool {
    let lower = expr.to_lowercase();
    lower.contains("user_metadata") || lower.contains("raw_user_meta_data")
}

/// Whether `expr` identifies the caller by the database role (`current_user`,
/// `session_user`, `current_role`): under a pool every tenant is the same role.
pub(crate) fn role_identity(expr: &str) -> bool {
    let lower = expr.to_lowercase();
    ["current_user", "session_user", "current_role"]
        .iter()
        .any(|w| references(&lower, w))
}

/// Splits at commas at parenthesis depth 0, outside string literals.
fn split_commas(expr: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut in_str = false;
    let mut cur = String::new();
    for c in expr.chars() {
        match c {
            '\'' => in_str = !in_str,
            '(' if !in_str => depth += 1,
            ')' if !in_str => depth -= 1,
            ',' if !in_str && depth == 0 => {
                parts.push(std::mem::take(&mut cur).trim().to_owned());
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    parts.push(cur.trim().to_owned());
    parts
}

/// Collapses whitespace and lowercases a function body.
fn squash(body: &str) -> String {
    body.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Holes found in a SQL or PL/pgSQL function body that a policy calls.
pub(crate) fn body_shape(body: &str) -> Option<Shape> {
    let b = squash(body);
    let stripped: String = b
        .trim()
        .trim_start_matches("begin")
        .trim_end_matches(';')
        .trim_end_matches("end")
        .trim()
        .trim_end_matches(';')
        .trim()
        .to_owned();
    let core = stripped
        .trim_start_matches("select ")
        .trim_start_matches("return ")
        .trim();
    if core == "true" || core == "(true)" {
        return Some(Shape::AlwaysTrue);
    }
    if b.contains(" or true") || b.contains("or 1=1") || b.contains("or 1 = 1") {
        return Some(Shape::AlwaysTrue);
    }
    if b.contains("is null or ") || (b.contains(" or ") && b.contains(" is null")) {
        return Some(Shape::FailOpen);
    }
    None
}

/// Whether `body` reads a setting directly.
pub(crate) fn reads_setting(body: &str) -> bool {
    body.to_lowercase().contains("current_setting(")
}

/// Setting names read with `current_setting('name', ...)` in `text`.
pub(crate) fn settings_read(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(pos) = lower[from..].find("current_setting(") {
        let at = from + pos + "current_setting(".len();
        let rest = lower[at..].trim_start();
        if let Some(r) = rest.strip_prefix('\'') {
            if let Some(end) = r.find('\'') {
                let name = r[..end].to_owned();
                if !out.contains(&name) {
                    out.push(name);
                }
            }
        }
        from = at;
    }
    out
}

/// Positions of calls to `name(` in `expr` that are not inside a `(SELECT ...)` sub-select,
/// i.e. that PostgreSQL evaluates once per row instead of once per statement.
pub(crate) fn unwrapped_calls(expr: &str, name: &str) -> usize {
    let lower = expr.to_lowercase();
    let pat = format!("{}(", name.to_lowercase());
    let bytes = lower.as_bytes();
    // Stack of open parentheses: true when the group is a sub-select.
    let mut stack: Vec<bool> = Vec::new();
    let mut in_str = false;
    let mut count = 0;
    for i in 0..bytes.len() {
        let c = bytes[i];
        if c == b'\'' {
            in_str = !in_str;
            continue;
        }
        if in_str {
            continue;
        }
        if bytes[i..].starts_with(pat.as_bytes()) {
            let prev = lower[..i].chars().next_back();
            if !prev.is_some_and(ident_char) && !stack.iter().any(|s| *s) {
                count += 1;
            }
        }
        match c {
            b'(' => stack.push(lower[i + 1..].trim_start().starts_with("select ")),
            b')' => {
                stack.pop();
            }
            _ => {}
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert_eq!(classify("true", "tenant_id"), Shape::AlwaysTrue);
        assert_eq!(classify("(1 = 1)", "tenant_id"), Shape::AlwaysTrue);
        assert_eq!(
            classify("((tenant_id = x()) OR true)", "tenant_id"),
            Shape::AlwaysTrue
        );
        assert_eq!(
            classify("((current_setting('app.tenant_id'::text, true) IS NULL) OR (tenant_id = (current_setting('app.tenant_id'::text, true))::uuid))", "tenant_id"),
            Shape::FailOpen
        );
        assert_eq!(
            classify("((tenant_id = x()) OR is_public)", "tenant_id"),
            Shape::OrWidened {
                all_branches_tenant: false
            }
        );
        assert_eq!(
            classify("(title <> ''::text)", "tenant_id"),
            Shape::NoTenantColumn
        );
        assert_eq!(
            classify(
                "(tenant_id = ( SELECT tenancy.current_tenant_id() AS current_tenant_id))",
                "tenant_id"
            ),
            Shape::Tenant
        );
        assert!(!references("(my_tenant_id = 1)", "tenant_id"));
        assert!(references("(\"tenant_id\" = 1)", "tenant_id"));
    }

    #[test]
    fn initplan() {
        assert_eq!(
            unwrapped_calls(
                "(tenant_id = ( SELECT tenancy.current_tenant_id() AS current_tenant_id))",
                "current_tenant_id"
            ),
            0
        );
        assert_eq!(
            unwrapped_calls(
                "(tenant_id = tenancy.current_tenant_id())",
                "current_tenant_id"
            ),
            1
        );
        assert_eq!(
            unwrapped_calls("(tenant_id = ( SELECT (NULLIF(current_setting('app.tenant_id'::text, true), ''::text))::uuid AS \"nullif\"))", "current_setting"),
            0
        );
        assert_eq!(
            unwrapped_calls(
                "(tenant_id = (current_setting('app.tenant_id'::text))::uuid)",
                "current_setting"
            ),
            1
        );
        assert_eq!(
            settings_read("x = current_setting('app.tenant_id'::text, true)"),
            vec!["app.tenant_id".to_owned()]
        );
    }

    /// Byte positions inside multi-byte characters are never sliced.
    #[test]
    fn non_ascii_text() {
        let e = "((title = 'Größe'::text) OR (tenant_id = ( SELECT ctx() AS ctx)))";
        assert!(matches!(classify(e, "tenant_id"), Shape::OrWidened { .. }));
        assert_eq!(unwrapped_calls("(x = 'é' AND y = ctx())", "ctx"), 1);
        assert_eq!(
            classify("(tenant_id = coalesce('ü', 'ß'))", "tenant_id"),
            Shape::Tenant
        );
    }

    #[test]
    fn bound_keys() {
        let uid = "(user_id = ( SELECT auth.uid() AS uid))";
        assert_eq!(bound_columns(uid, "todos", &[], true), vec!["user_id"]);
        assert_eq!(classify(uid, "user_id"), Shape::Tenant);
        let member = "(org_id IN ( SELECT m.org_id\n   FROM memberships m\n  WHERE (m.user_id = auth.uid())))";
        assert_eq!(bound_columns(member, "projects", &[], true), vec!["org_id"]);
        let exists = "(EXISTS ( SELECT 1\n   FROM memberships m\n  WHERE ((m.org_id = projects.org_id) AND (m.user_id = auth.uid()))))";
        assert_eq!(bound_columns(exists, "projects", &[], true), vec!["org_id"]);
        assert_eq!(classify(exists, "org_id"), Shape::Tenant);
        // A context function the checker is told about, and one it is not (loose).
        assert_eq!(
            bound_columns("(owner = app.me())", "t", &["me".to_owned()], true),
            vec!["owner"]
        );
        assert!(bound_columns("(owner = app.me())", "t", &[], true).is_empty());
        assert_eq!(classify("(owner = app.me())", "owner"), Shape::Tenant);
        // Mentions without a comparison with the caller.
        assert_eq!(classify("(user_id IS NOT NULL)", "user_id"), Shape::Unbound);
        assert_eq!(
            classify(
                "(org_id IN ( SELECT m.org_id FROM memberships m))",
                "org_id"
            ),
            Shape::Unbound
        );
        assert_eq!(
            classify("(tenant_id = other_id)", "tenant_id"),
            Shape::Unbound
        );
        // Casts on the column side.
        assert_eq!(
            classify(
                "((tenant_id)::text = current_setting('app.tenant'::text, true))",
                "tenant_id"
            ),
            Shape::Tenant
        );
    }

    #[test]
    fn caller_controlled_and_inverted() {
        assert_eq!(
            classify("(((( SELECT auth.uid() AS uid) IS NOT NULL) OR (user_id = ( SELECT auth.uid() AS uid))))", "user_id"),
            Shape::AlwaysTrue
        );
        assert_eq!(
            classify(
                "(tenant_id = COALESCE((current_setting('a'::text, true))::uuid, tenant_id))",
                "tenant_id"
            ),
            Shape::FailOpen
        );
        assert!(user_controlled(
            "((auth.jwt() -> 'user_metadata'::text) ->> 'org'::text)"
        ));
        assert!(!user_controlled(
            "((auth.jwt() -> 'app_metadata'::text) ->> 'org'::text)"
        ));
        assert!(role_identity("(created_by = CURRENT_USER)"));
        assert!(!role_identity("(created_by_user = 1)"));
    }

    #[test]
    fn bodies() {
        assert_eq!(
            body_shape(
                "SELECT current_setting('a', true) IS NULL OR t = current_setting('a', true)::uuid"
            ),
            Some(Shape::FailOpen)
        );
        assert_eq!(
            body_shape(" begin return true; end; "),
            Some(Shape::AlwaysTrue)
        );
        assert_eq!(body_shape("SELECT t = current_setting('a')::uuid"), None);
    }
}
