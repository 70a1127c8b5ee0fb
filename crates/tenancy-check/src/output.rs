//! Report renderers: text, JSON, SARIF 2.1.0 and JUnit XML.

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde_json::{json, Value};

use crate::model::{Report, Severity, RULES};

/// Output format of `tenancy check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable, grouped by object.
    Text,
    /// `{"findings":[…],"summary":{…},"database":…,"runtime_role":…}`.
    Json,
    /// SARIF 2.1.0, for code-scanning dashboards.
    Sarif,
    /// JUnit XML, for CI test reports.
    Junit,
}

/// Writes `report` in `format`; `color` adds ANSI colours to the text format.
pub fn render(report: &Report, format: Format, color: bool, out: &mut dyn Write) -> io::Result<()> {
    match format {
        Format::Text => text(report, color, out),
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, &json_value(report))?;
            writeln!(out)
        }
        Format::Sarif => {
            serde_json::to_writer_pretty(&mut *out, &sarif(report))?;
            writeln!(out)
        }
        Format::Junit => junit(report, out),
    }
}

/// The JSON document of the `json` format.
pub fn json_value(report: &Report) -> Value {
    let s = report.summary();
    json!({
        "findings": report.findings,
        "summary": {"errors": s.errors, "warnings": s.warnings, "info": s.info, "tenant_tables": report.tenant_tables.len()},
        "database": report.database,
        "runtime_role": report.runtime_role,
        "tenancy_managed": report.tenancy_managed,
        "server_version": report.server_version,
        "context_impl": report.context_impl,
        "tenant_tables": report.tenant_tables,
    })
}

fn text(report: &Report, color: bool, out: &mut dyn Write) -> io::Result<()> {
    let paint = |sev: Severity| -> (&'static str, &'static str) {
        if !color {
            return ("", "");
        }
        match sev {
            Severity::Error => ("\x1b[1;31m", "\x1b[0m"),
            Severity::Warning => ("\x1b[33m", "\x1b[0m"),
            Severity::Info => ("\x1b[36m", "\x1b[0m"),
        }
    };
    writeln!(
        out,
        "tenancy check: database {}, runtime role {} ({}), {} tenant table(s)",
        report.database,
        report.runtime_role,
        if report.tenancy_managed {
            "tenancy-managed"
        } else {
            "not tenancy-managed"
        },
        report.tenant_tables.len()
    )?;
    if let Some(imp) = &report.context_impl {
        writeln!(out, "tenant context: {imp}")?;
    }
    let mut by_object: BTreeMap<&str, Vec<&crate::Finding>> = BTreeMap::new();
    for f in &report.findings {
        by_object.entry(f.object.as_str()).or_default().push(f);
    }
    for (obj, fs) in by_object {
        writeln!(out, "\n{obj}")?;
        for f in fs {
            let (a, b) = paint(f.severity);
            writeln!(
                out,
                "  {a}{:<7}{b} {}: {}",
                f.severity.as_str(),
                f.rule,
                f.message
            )?;
            for line in f.fix.lines() {
                writeln!(out, "          fix: {line}")?;
            }
        }
    }
    let s = report.summary();
    writeln!(
        out,
        "\n{} error(s), {} warning(s), {} info",
        s.errors, s.warnings, s.info
    )
}

fn level(sev: Severity) -> &'static str {
    match sev {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Info => "note",
    }
}

/// The SARIF 2.1.0 log.
pub fn sarif(report: &Report) -> Value {
    let rules: Vec<Value> = RULES
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "name": r.id,
                "shortDescription": {"text": r.title},
                "fullDescription": {"text": r.title},
                "help": {"text": format!("{}. Run `tenancy check` for the affected objects, the reason and the SQL that fixes it.", r.title)},
                "defaultConfiguration": {"level": level(r.severity)},
            })
        })
        .collect();
    let results: Vec<Value> = report
        .findings
        .iter()
        .map(|f| {
            let index = RULES.iter().position(|r| r.id == f.rule);
            let mut v = json!({
                "ruleId": f.rule,
                "level": level(f.severity),
                "message": {"text": format!("{}\nFix: {}", f.message, f.fix)},
                "locations": [{"logicalLocations": [{"name": f.object, "fullyQualifiedName": format!("{}/{}", report.database, f.object)}]}],
                "properties": {"fix": f.fix, "severity": f.severity.as_str()},
            });
            if let (Some(i), Some(obj)) = (index, v.as_object_mut()) {
                obj.insert("ruleIndex".into(), json!(i));
            }
            v
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "tenancy check", "version": env!("CARGO_PKG_VERSION"), "rules": rules}},
            "results": results,
            "properties": {"database": report.database, "runtime_role": report.runtime_role},
        }]
    })
}

fn xml(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' && c != '\r' => {}
            c => o.push(c),
        }
    }
    o
}

fn junit(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    let s = report.summary();
    // One test case per tenant table (passes unless an error finding names it) and one per finding.
    let mut cases = String::new();
    let mut tests = 0;
    for tt in &report.tenant_tables {
        tests += 1;
        let errs: Vec<_> = report
            .findings
            .iter()
            .filter(|f| &f.object == tt && f.severity == Severity::Error)
            .collect();
        cases.push_str(&format!(
            "  <testcase classname=\"tenant-table\" name=\"{}\">\n",
            xml(tt)
        ));
        if !errs.is_empty() {
            let rules: Vec<&str> = errs.iter().map(|f| f.rule.as_str()).collect();
            cases.push_str(&format!(
                "    <failure type=\"isolation\" message=\"{}\"/>\n",
                xml(&rules.join(", "))
            ));
        }
        cases.push_str("  </testcase>\n");
    }
    for f in &report.findings {
        tests += 1;
        cases.push_str(&format!(
            "  <testcase classname=\"{}\" name=\"{}\">\n",
            xml(&f.rule),
            xml(&f.object)
        ));
        if f.severity == Severity::Error {
            cases.push_str(&format!(
                "    <failure type=\"error\" message=\"{}\">{}\nFix:\n{}</failure>\n",
                xml(&f.message),
                xml(&f.message),
                xml(&f.fix)
            ));
        } else {
            cases.push_str(&format!(
                "    <system-out>{}: {}\nFix:\n{}</system-out>\n",
                f.severity.as_str(),
                xml(&f.message),
                xml(&f.fix)
            ));
        }
        cases.push_str("  </testcase>\n");
    }
    let failures = s.errors
        + report
            .tenant_tables
            .iter()
            .filter(|tt| {
                report
                    .findings
                    .iter()
                    .any(|f| &&f.object == tt && f.severity == Severity::Error)
            })
            .count();
    writeln!(out, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>")?;
    writeln!(out, "<testsuite name=\"tenancy check\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\">")?;
    writeln!(out, "  <properties><property name=\"database\" value=\"{}\"/><property name=\"runtime_role\" value=\"{}\"/></properties>", xml(&report.database), xml(&report.runtime_role))?;
    write!(out, "{cases}")?;
    writeln!(out, "</testsuite>")?;

    Ok(())
}
