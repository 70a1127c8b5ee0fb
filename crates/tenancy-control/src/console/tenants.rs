//! The tenants page: search by slug (prefix), id or custom domain; filters by state,
//! plan, region and placement; keyset paging in slug order on the catalog's slug index,
//! so a page costs the same at the first tenant and at the hundred-thousandth.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use maud::{html, Markup};
use serde::Deserialize;
use tenancy_catalog::{tenant_from_row, Tenant, TENANT_COLUMNS};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::layout::{self, Section};
use super::{html_response, refused, Ctx};
use crate::error::ApiError;
use crate::AppState;

/// Tenants per page.
const PAGE: i64 = 50;

const STATES: &[&str] = &["provisioning", "active", "suspended", "deleting", "deleted"];
const PLACEMENTS: &[&str] = &["pooled", "schema", "dedicated"];

/// The search, filters and cursor of the tenants page.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    plan: String,
    #[serde(default)]
    region: String,
    #[serde(default)]
    placement: String,
    /// Cursor: the slug and id of the last tenant of the previous page.
    #[serde(default)]
    after_slug: String,
    #[serde(default)]
    after_id: String,
}

/// What the search box holds.
#[derive(Debug, PartialEq, Eq)]
enum Search {
    None,
    Id(Uuid),
    Domain(String),
    SlugPrefix(String),
}

fn parse_search(q: &str) -> Result<Search, String> {
    let q = q.trim();
    if q.is_empty() {
        return Ok(Search::None);
    }
    if let Ok(id) = q.parse::<Uuid>() {
        return Ok(Search::Id(id));
    }
    let lower = q.to_ascii_lowercase();
    let hostname_chars = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    };
    if lower.contains('.') && lower.len() <= 253 && hostname_chars(&lower) {
        return Ok(Search::Domain(lower));
    }
    if lower.len() <= 40 && !lower.contains('.') && hostname_chars(&lower) {
        return Ok(Search::SlugPrefix(lower));
    }
    Err("Search by a slug or its beginning (a-z, 0-9, -), a tenant id (UUID) or a custom domain (app.example.com).".into())
}

/// A filter value: empty (any) or one of `allowed`.
fn one_of(field: &str, v: &str, allowed: &[String]) -> Result<Option<String>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    if allowed.iter().any(|a| a == v) {
        Ok(Some(v.to_owned()))
    } else {
        Err(format!("Unknown {field} {v:?}."))
    }
}

/// The filter's choices: fixed states and placements, the known plans and the regions.
struct Choices {
    states: Vec<String>,
    plans: Vec<String>,
    regions: Vec<String>,
    placements: Vec<String>,
}

/// One page of tenants, and the cursor of the next page when there is one.
async fn query_page(
    conn: &tokio_postgres::Client,
    search: &Search,
    filters: [(&str, Option<String>); 4],
    after: Option<(String, Uuid)>,
) -> Result<(Vec<Tenant>, bool), ApiError> {
    let mut sql = format!("SELECT {TENANT_COLUMNS} FROM tenancy_catalog.tenants WHERE true");
    let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    let mut param = |sql: &mut String, clause: &str, v: Box<dyn ToSql + Sync + Send>| {
        params.push(v);
        sql.push_str(&clause.replace("$?", &format!("${}", params.len())));
    };
    match search {
        Search::None => {}
        Search::Id(id) => param(&mut sql, " AND id = $?", Box::new(*id)),
        Search::Domain(d) => param(
            &mut sql,
            " AND id IN (SELECT tenant_id FROM tenancy_catalog.config_domains WHERE hostname = $?)",
            Box::new(d.clone()),
        ),
        // Every slug with this prefix sorts at or after it: the index scan starts there.
        Search::SlugPrefix(p) => param(
            &mut sql,
            " AND slug >= $? AND starts_with(slug, $?::text)",
            Box::new(p.clone()),
        ),
    }
    for (column, value) in filters {
        if let Some(v) = value {
            param(&mut sql, &format!(" AND {column} = $?"), Box::new(v));
        }
    }
    if let Some((slug, id)) = after {
        param(
            &mut sql,
            " AND slug >= $? AND (slug > $?::text",
            Box::new(slug),
        );
        param(&mut sql, " OR id > $?)", Box::new(id));
    }
    sql.push_str(&format!(" ORDER BY slug, id LIMIT {}", PAGE + 1));
    let refs: Vec<&(dyn ToSql + Sync)> = params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let rows = conn
        .query(&sql, &refs)
        .await
        .map_err(|e| ApiError::unavailable("listing tenants", &e))?;
    let mut tenants = rows
        .iter()
        .map(tenant_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let more = tenants.len() as i64 > PAGE;
    tenants.truncate(PAGE as usize);
    Ok((tenants, more))
}

/// `GET /console/tenants`.
pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(ctx): Extension<Ctx>,
    Query(q): Query<ListQuery>,
) -> Response {
    let conn = match state.catalog().await {
        Ok(c) => c,
        Err(e) => return refused(StatusCode::SERVICE_UNAVAILABLE, &e.detail),
    };
    let regions = match tenancy_catalog::list_regions(&conn).await {
        Ok(r) => r.into_iter().map(|r| r.id.to_string()).collect(),
        Err(e) => return refused(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let choices = Choices {
        states: STATES.iter().map(|s| s.to_string()).collect(),
        plans: crate::api::known_plans(&state).into_iter().collect(),
        regions,
        placements: PLACEMENTS.iter().map(|s| s.to_string()).collect(),
    };
    let checked = (|| {
        let search = parse_search(&q.q)?;
        let filters = [
            ("state", one_of("state", &q.state, &choices.states)?),
            ("plan", one_of("plan", &q.plan, &choices.plans)?),
            ("region", one_of("region", &q.region, &choices.regions)?),
            (
                "placement",
                one_of("placement", &q.placement, &choices.placements)?,
            ),
        ];
        let after = if q.after_slug.is_empty() {
            None
        } else {
            let id = q
                .after_id
                .parse::<Uuid>()
                .map_err(|_| "The page cursor is not valid.".to_owned())?;
            Some((q.after_slug.clone(), id))
        };
        Ok::<_, String>((search, filters, after))
    })();
    let (status, error, tenants, more) = match checked {
        Err(e) => (StatusCode::UNPROCESSABLE_ENTITY, Some(e), Vec::new(), false),
        Ok((search, filters, after)) => match query_page(&conn, &search, filters, after).await {
            Ok((t, more)) => (StatusCode::OK, None, t, more),
            Err(e) => return refused(e.status(), &e.detail),
        },
    };
    let body = html! {
        h1 { "Tenants" }
        (filter_form(&q, &choices))
        @if let Some(e) = &error { p.error role="alert" { (e) } }
        (table(&tenants))
        @if more {
            @if let Some(last) = tenants.last() {
                nav aria-label="Pages" {
                    a.next rel="next" href=(next_href(&q, last)) { "Next page" }
                }
            }
        }
    };
    html_response(
        status,
        layout::page(&ctx, Section::Tenants, "Tenants", body),
    )
}

fn filter_form(q: &ListQuery, c: &Choices) -> Markup {
    let select = |name: &str, label: &str, current: &str, options: &[String]| {
        html! {
            div.field {
                label for=(format!("f-{name}")) { (label) }
                select id=(format!("f-{name}")) name=(name) data-autosubmit {
                    option value="" selected[current.is_empty()] { "any" }
                    @for o in options { option value=(o) selected[current == o] { (o) } }
                }
            }
        }
    };
    html! {
        form.filters method="get" action="/console/tenants" role="search" aria-label="Find tenants" {
            div.field.wide {
                label for="q" { "Slug, id or domain" }
                input #q type="search" name="q" value=(q.q) autocomplete="off";
            }
            (select("state", "State", &q.state, &c.states))
            (select("plan", "Plan", &q.plan, &c.plans))
            (select("region", "Region", &q.region, &c.regions))
            (select("placement", "Placement", &q.placement, &c.placements))
            div.field { button type="submit" { "Search" } }
        }
    }
}

fn table(tenants: &[Tenant]) -> Markup {
    html! {
        @if tenants.is_empty() {
            p #results { "No tenant matches." }
        } @else {
            div.scroll {
                table #results {
                    caption.visually-hidden { "Tenants in slug order" }
                    thead { tr {
                        th scope="col" { "Slug" } th scope="col" { "Name" } th scope="col" { "State" }
                        th scope="col" { "Plan" } th scope="col" { "Region" } th scope="col" { "Placement" }
                    } }
                    tbody {
                        @for t in tenants {
                            tr {
                                th scope="row" { a href=(format!("/console/tenants/{}", t.id)) { (t.slug) } }
                                td { (t.display_name) }
                                td { span class=(format!("state state-{}", t.state)) { (t.state.to_string()) } }
                                td { (t.plan) } td { (t.region) } td { (t.placement.to_string()) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The next page's address: the same search and filters, the last tenant as cursor.
fn next_href(q: &ListQuery, last: &Tenant) -> String {
    let id = last.id.to_string();
    let pairs = [
        ("q", q.q.as_str()),
        ("state", &q.state),
        ("plan", &q.plan),
        ("region", &q.region),
        ("placement", &q.placement),
        ("after_slug", last.slug.as_str()),
        ("after_id", &id),
    ];
    let query = serde_urlencoded::to_string(
        pairs
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .collect::<Vec<_>>(),
    )
    .unwrap_or_default();
    format!("/console/tenants?{query}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_search_box_tells_ids_domains_and_slugs_apart() {
        let id = Uuid::new_v4();
        assert_eq!(parse_search(""), Ok(Search::None));
        assert_eq!(parse_search(&id.to_string()), Ok(Search::Id(id)));
        assert_eq!(
            parse_search("App.Example.com"),
            Ok(Search::Domain("app.example.com".into()))
        );
        assert_eq!(parse_search("acm"), Ok(Search::SlugPrefix("acm".into())));
        assert!(parse_search("a'; DROP TABLE x").is_err());
        assert!(parse_search(&"a".repeat(41)).is_err());
    }

    #[test]
    fn filters_take_only_known_values() {
        let allowed = vec!["active".to_owned()];
        assert_eq!(one_of("state", "", &allowed), Ok(None));
        assert_eq!(
            one_of("state", "active", &allowed),
            Ok(Some("active".into()))
        );
        assert!(one_of("state", "gone", &allowed).is_err());
    }
}
