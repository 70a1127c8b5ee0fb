//! Text analysis of deparsed policy predicates (`pg_get_expr`) and function bodies.
//!
//! This is heuristic by nature: it recognises the shapes that leak in practice (always-true,
//! `OR`-widened, fail-open `IS NULL OR`) and the performance shape of context calls. The
//! active probe is the behavioural cross-check.

/// What a predicate does to tenant isolation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
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
}

/// Whether `c` can be part of an SQL identifier.
fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '$'
}

/// Removes parentheses that enclose the whole expression.
pub fn strip_outer(expr: &str) -> &str {
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
pub fn split_top(expr: &str, keyword: &str) -> Vec<String> {
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
        if depth == 0 && !in_str && upper[i..].starts_with(&kw) {
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
pub fn references(expr: &str, col: &str) -> bool {
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
pub fn always_true(expr: &str) -> bool {
    let e = strip_outer(expr);
    let ors = split_top(e, "OR");
    if ors.iter().any(|d| atom_true(d)) {
        return true;
    }
    let ands = split_top(e, "AND");
    ands.len() > 1 && ands.iter().all(|c| always_true(c))
}

/// Classifies a policy predicate for tenant column `col`.
pub fn classify(expr: &str, col: &str) -> Shape {
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
        return Shape::OrWidened {
            all_branches_tenant: ors.iter().all(|d| references(d, col)),
        };
    }
    if !references(e, col) {
        return Shape::NoTenantColumn;
    }
    Shape::Tenant
}

/// Collapses whitespace and lowercases a function body.
fn squash(body: &str) -> String {
    body.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Holes found in a SQL or PL/pgSQL function body that a policy calls.
pub fn body_shape(body: &str) -> Option<Shape> {
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
pub fn reads_setting(body: &str) -> bool {
    body.to_lowercase().contains("current_setting(")
}

/// Setting names read with `current_setting('name', ...)` in `text`.
pub fn settings_read(text: &str) -> Vec<String> {
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
pub fn unwrapped_calls(expr: &str, name: &str) -> usize {
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
        if lower[i..].starts_with(&pat) {
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
