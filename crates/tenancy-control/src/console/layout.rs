//! The page skeleton: a skip link, the banner with the navigation and the sign-out form,
//! the main landmark (focus target of the skip link), and the one-shot message of the
//! last action. Helpers for values that may be absent and for times.

use maud::{html, Markup, DOCTYPE};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::Ctx;

/// The sections of the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    Tenants,
    Flags,
    Plans,
    Workflows,
    Deliveries,
}

const NAV: &[(Section, &str, &str)] = &[
    (Section::Tenants, "/console/tenants", "Tenants"),
    (Section::Flags, "/console/flags", "Flags"),
    (Section::Plans, "/console/plans", "Plans"),
    (Section::Workflows, "/console/workflows", "Workflows"),
    (
        Section::Deliveries,
        "/console/deliveries",
        "Webhook deliveries",
    ),
];

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · tenancy console" }
            link rel="stylesheet" href="/console/static/console.css";
            script src="/console/static/console.js" defer {}
        }
    }
}

/// A page of a signed-in operator.
pub(crate) fn page(ctx: &Ctx, section: Section, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a.skip href="#main" { "Skip to content" }
                header.banner {
                    span.brand { "tenancy console" }
                    nav aria-label="Console" {
                        ul {
                            @for (s, href, label) in NAV {
                                li {
                                    @if *s == section {
                                        a href=(href) aria-current="page" { (label) }
                                    } @else {
                                        a href=(href) { (label) }
                                    }
                                }
                            }
                        }
                    }
                    form.sign-out method="post" action="/console/sign-out" {
                        (csrf_field(ctx))
                        button type="submit" { "Sign out" }
                    }
                }
                main #main tabindex="-1" {
                    @if let Some(m) = &ctx.session.flash {
                        p.flash role="status" id="flash" { (m) }
                    }
                    (body)
                }
            }
        }
    }
}

/// A page without navigation (sign-in, errors).
pub(crate) fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                main #main.narrow { (body) }
            }
        }
    }
}

/// The hidden CSRF field every form carries.
pub(crate) fn csrf_field(ctx: &Ctx) -> Markup {
    html! { input type="hidden" name="csrf" value=(ctx.csrf()); }
}

/// An optional value, or a dash that screen readers announce as "none".
pub(crate) fn opt<T: std::fmt::Display>(v: Option<T>) -> Markup {
    match v {
        Some(v) => html! { (v.to_string()) },
        None => none(),
    }
}

/// An absent value.
pub(crate) fn none() -> Markup {
    html! { span aria-label="none" { "—" } }
}

/// A time in RFC 3339, in a `<time>` element.
pub(crate) fn time(t: OffsetDateTime) -> Markup {
    let s = t.format(&Rfc3339).unwrap_or_default();
    html! { time datetime=(s) { (s) } }
}

/// A compact JSON rendering of a value (escaped by maud like any text).
pub(crate) fn json(v: &serde_json::Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}
