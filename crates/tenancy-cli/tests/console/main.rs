//! The operator console in a real browser: Debian's Chromium, headless, driven through
//! chromedriver (WebDriver), against a `tenancy serve` on the embedded default that the
//! test starts. Install the browser with `scripts/browser.sh`.

mod support;

use serde_json::Value;
use support::{request, wait_until, Browser, Serve};

/// What a tenant's name and branding hold: markup that would run if it were not escaped.
const HOSTILE: &str =
    r#"<script>window.__pwned=1;alert("x")</script><img src=x onerror="window.__pwned=2">"#;

/// Creates a tenant through the API and waits until its workers made it active.
fn active_tenant(serve: &Serve, slug: &str, display_name: &str) -> String {
    let body = serde_json::json!({
        "slug": slug, "display_name": display_name, "plan": "free",
        "region": "eu-west", "placement": "pooled",
    });
    let (s, b) = serve.api("POST", "/v1/tenants", Some(&body.to_string()));
    assert_eq!(s, 202, "{b}");
    let v: Value = serde_json::from_str(&b).expect("json");
    let id = v["tenant"]["id"].as_str().expect("id").to_owned();
    wait_until(&format!("tenant {slug} is active"), || {
        tenant_state(serve, &id) == "active"
    });
    id
}

fn tenant_state(serve: &Serve, id: &str) -> String {
    let (_, b) = serve.api("GET", &format!("/v1/tenants/{id}"), None);
    let v: Value = serde_json::from_str(&b).unwrap_or_default();
    v["state"].as_str().unwrap_or_default().to_owned()
}

/// The value `/v1/evaluate` gives the flag for the tenant.
fn evaluated(serve: &Serve, id: &str, flag: &str) -> Value {
    let (_, b) = serve.api("GET", &format!("/v1/evaluate/{id}?flags={flag}"), None);
    let v: Value = serde_json::from_str(&b).unwrap_or_default();
    v["flags"][flag]["value"].clone()
}

/// The value `/v1/evaluate` gives the entitlement for the tenant.
fn entitlement(serve: &Serve, id: &str, key: &str) -> Value {
    let (_, b) = serve.api("GET", &format!("/v1/evaluate/{id}"), None);
    let v: Value = serde_json::from_str(&b).unwrap_or_default();
    v["entitlements"][key]["value"].clone()
}

async fn click_button(b: &Browser, label: &str) {
    b.find_xpath(&format!("//button[normalize-space()='{label}']"), label)
        .await
        .click()
        .await
        .expect("click");
}

/// Every form control that people use has a label, and the page has its landmarks.
async fn assert_accessible(b: &Browser) {
    let unlabelled = b
        .js("return [...document.querySelectorAll('input:not([type=hidden]),select,textarea')].filter(e => e.labels.length === 0).map(e => e.name)")
        .await;
    assert_eq!(
        unlabelled,
        serde_json::json!([]),
        "controls without a label"
    );
    let landmarks = b
        .js("return ['header','nav','main'].every(t => document.querySelector(t))")
        .await;
    assert_eq!(landmarks, Value::Bool(true), "banner, navigation and main");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_chromium_signs_in_finds_acts_edits_flags_and_plans_escapes_and_signs_out() {
    let serve = Serve::start();
    let hostile_id = active_tenant(&serve, "acme-hostile", HOSTILE);
    let id = active_tenant(&serve, "acme", "Acme Corporation");
    active_tenant(&serve, "globex", "Globex");
    let branding = serde_json::json!({
        "display_name": HOSTILE, "primary_color": "#112233", "accent_color": "#445566",
        "email_from_name": "Acme", "email_from_address": "ops@acme.example.com",
    });
    let (s, b) = serve.api(
        "PUT",
        &format!("/v1/config/tenants/{hostile_id}/branding"),
        Some(&branding.to_string()),
    );
    assert_eq!(s, 200, "{b}");
    let flag = r#"{"kind":"boolean","variants":{"on":true,"off":false},"default_variant":"off","off_variant":"off"}"#;
    let (s, b) = serve.api("PUT", "/v1/config/flags/console-beta", Some(flag));
    assert_eq!(s, 200, "{b}");
    wait_until("the flag is in the snapshot, off", || {
        evaluated(&serve, &id, "console-beta") == Value::Bool(false)
    });
    for (path, body) in [
        (
            "/v1/config/entitlements/seats",
            r#"{"kind":"limit","default":5}"#,
        ),
        (
            "/v1/config/plans/free",
            r#"{"display_name":"Free","entitlements":{"seats":10}}"#,
        ),
    ] {
        let (s, b) = serve.api("PUT", path, Some(body));
        assert_eq!(s, 200, "{path}: {b}");
    }
    wait_until("the plan's limit is in the snapshot", || {
        entitlement(&serve, &id, "seats") == serde_json::json!(10)
    });

    // Without a session every console page redirects to the sign-in page; the console is
    // not part of the API's OpenAPI document.
    for path in [
        "/console",
        "/console/tenants",
        "/console/flags",
        "/console/plans",
        "/console/workflows",
    ] {
        let (s, head, _) = serve.get(path, None);
        assert_eq!(s, 303, "{path}: {head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("location: /console/sign-in"),
            "{head}"
        );
    }
    let (_, _, doc) = serve.get("/openapi.json", None);
    assert!(
        !doc.contains("/console"),
        "console routes stay out of the OpenAPI document"
    );

    let b = Browser::start("main").await;
    b.goto(&serve.url("/console/tenants")).await;
    b.wait_path("/console/sign-in").await;
    // A wrong token is refused; the right one opens a session.
    b.type_into("#token", "not-the-token").await;
    click_button(&b, "Sign in").await;
    assert!(b.text("#sign-in-error").await.contains("not valid"));
    b.type_into("#token", &serve.token).await;
    click_button(&b, "Sign in").await;
    b.wait_path("/console/tenants").await;
    let cookie = b
        .client
        .get_named_cookie("tenancy_console")
        .await
        .expect("session cookie");
    assert_eq!(cookie.http_only(), Some(true), "HttpOnly");
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Strict)");
    let session = format!("tenancy_console={}", cookie.value());
    let (s, head, _) = serve.get("/console/tenants", Some(&session));
    assert_eq!(s, 200);
    let head = head.to_ascii_lowercase();
    assert!(
        head.contains(
            "content-security-policy: default-src 'self'; script-src 'self'; style-src 'self'"
        ),
        "{head}"
    );
    assert_accessible(&b).await;
    // The keyboard starts at the skip link, which moves focus to the main content.
    b.find("body")
        .await
        .send_keys("\u{E004}")
        .await
        .expect("Tab");
    let first = b.js("return document.activeElement.textContent").await;
    assert_eq!(
        first,
        Value::String("Skip to content".into()),
        "first Tab stop"
    );
    b.client
        .active_element()
        .await
        .expect("focus")
        .send_keys("\u{E007}")
        .await
        .expect("Enter");
    let focused = b.js("return document.activeElement.id").await;
    assert_eq!(
        focused,
        Value::String("main".into()),
        "the skip link moves focus to main"
    );

    // Find a tenant by the beginning of its slug, then by its id.
    b.type_into("#q", "acm").await;
    click_button(&b, "Search").await;
    b.wait_query("q=acm").await;
    b.find_xpath(
        "//table[@id='results']//a[normalize-space()='acme']",
        "acme in the results",
    )
    .await;
    let rows = b
        .js("return document.querySelectorAll('#results tbody tr').length")
        .await;
    assert_eq!(
        rows,
        serde_json::json!(2),
        "acme and acme-hostile, not globex"
    );
    b.screenshot("tenants").await;
    b.goto(&serve.url(&format!("/console/tenants?q={id}")))
        .await;
    b.find_xpath(
        "//table[@id='results']//a[normalize-space()='acme']",
        "acme by id",
    )
    .await
    .click()
    .await
    .expect("open acme");
    b.wait_path(&format!("/console/tenants/{id}")).await;
    assert_eq!(b.text("h1").await, "Tenant acme");
    assert_eq!(b.text("#tenant-state").await, "active");
    assert_accessible(&b).await;

    // Suspend, then resume, each after its confirmation step; the API sees the change.
    click_button(&b, "Suspend…").await;
    b.wait_path(&format!("/console/tenants/{id}/actions")).await;
    b.type_into("#reason", "browser test").await;
    click_button(&b, "Confirm suspend").await;
    b.wait_path(&format!("/console/tenants/{id}")).await;
    assert!(b.text("#flash").await.contains("suspend queued"));
    b.reload_until_text("#tenant-state", "suspended").await;
    assert_eq!(tenant_state(&serve, &id), "suspended");
    click_button(&b, "Resume…").await;
    click_button(&b, "Confirm resume").await;
    b.wait_path(&format!("/console/tenants/{id}")).await;
    b.reload_until_text("#tenant-state", "active").await;
    assert_eq!(tenant_state(&serve, &id), "active");
    // Both audit logs are on the page: the console's suspend and resume in the control
    // log, newest first, once sealed and checkpointed, with the chain verified.
    b.reload_until_js(
        "const rows = [...document.querySelectorAll('#audit-control tbody th')].map(t => t.textContent);
         return rows.indexOf('tenant.resume') >= 0 && rows.indexOf('tenant.resume') < rows.indexOf('tenant.suspend')
             && !!document.querySelector('#h-audit-control + p.chain.verified')
             && !document.querySelector('#audit p.error');",
        "the control log lists suspend and resume with its chain verified",
    )
    .await;
    assert!(b
        .text("#h-audit-control + p.chain")
        .await
        .starts_with("Verified up to the latest checkpoint"));
    b.screenshot("tenant").await;
    b.js("document.getElementById('h-audit').scrollIntoView(); return true")
        .await;
    b.screenshot("tenant-audit").await;

    // Turn the flag on for everyone in the editor; /v1/evaluate serves it.
    b.goto(&serve.url("/console/flags/console-beta")).await;
    b.find("#default_variant")
        .await
        .select_by_value("on")
        .await
        .expect("select");
    b.type_into("#reason", "browser test").await;
    click_button(&b, "Save flag").await;
    assert!(b.text("#flash").await.contains("saved"));
    b.screenshot("flag").await;
    wait_until("/v1/evaluate serves the flag on", || {
        evaluated(&serve, &id, "console-beta") == Value::Bool(true)
    });

    // Raise a limit of the tenants' plan in the plans editor; /v1/evaluate serves it.
    b.goto(&serve.url("/console/plans")).await;
    b.find_xpath(
        "//table[@id='plans']//a[normalize-space()='free']",
        "plan free",
    )
    .await
    .click()
    .await
    .expect("open plan free");
    b.wait_path("/console/plans/free").await;
    assert_accessible(&b).await;
    b.find("#ent-seats").await.clear().await.expect("clear");
    b.type_into("#ent-seats", "25").await;
    b.type_into("#reason", "browser test").await;
    click_button(&b, "Save plan").await;
    assert!(b.text("#flash").await.contains("Plan free saved"));
    b.screenshot("plan").await;
    wait_until("/v1/evaluate serves the plan's new limit", || {
        entitlement(&serve, &id, "seats") == serde_json::json!(25)
    });

    // A name and a branding that hold markup show as text; nothing of it runs.
    b.goto(&serve.url(&format!("/console/tenants/{hostile_id}")))
        .await;
    assert_eq!(b.text("#display-name").await, HOSTILE);
    assert_eq!(b.text("#branding-name").await, HOSTILE);
    assert_eq!(
        b.js("return window.__pwned === undefined").await,
        Value::Bool(true)
    );
    assert_eq!(
        b.js("return document.querySelectorAll('main script, main img').length")
            .await,
        serde_json::json!(0)
    );
    assert!(b.client.get_alert_text().await.is_err(), "no alert is open");

    // Readable at 360 px: nothing wider than the window.
    b.client.set_window_size(360, 800).await.expect("resize");
    b.client.refresh().await.expect("reload");
    b.find("#display-name").await;
    let fits = b
        .js("return document.documentElement.scrollWidth <= window.innerWidth")
        .await;
    assert_eq!(fits, Value::Bool(true), "the tenant page fits 360 px");
    b.screenshot("tenant-360px").await;
    b.client.set_window_size(1280, 1000).await.expect("resize");

    // A form posted without the CSRF token is refused (and changes nothing).
    b.goto(&serve.url(&format!("/console/tenants/{id}"))).await;
    b.find("#tenant-state").await;
    b.js(&format!(
        "const f = document.createElement('form'); f.method = 'post'; f.action = '/console/tenants/{id}/actions';
         for (const [k, v] of [['action', 'suspend'], ['key', 'console-no-csrf']]) {{
           const i = document.createElement('input'); i.type = 'hidden'; i.name = k; i.value = v; f.appendChild(i);
         }}
         document.body.appendChild(f); f.submit(); return true;"
    ))
    .await;
    assert!(b.text("p[role=alert]").await.contains("CSRF"));
    let form = "action=suspend&key=console-no-csrf-2";
    let post = |extra: &str| {
        request(
            serve.port,
            "POST",
            &format!("/console/tenants/{id}/actions"),
            &[
                ("Cookie", Some(&session)),
                ("Content-Type", Some("application/x-www-form-urlencoded")),
            ],
            Some(&format!("{form}{extra}")),
        )
    };
    assert_eq!(post("").0, 403, "no CSRF token");
    assert_eq!(post("&csrf=0000").0, 403, "a wrong CSRF token");
    assert_eq!(tenant_state(&serve, &id), "active", "nothing was suspended");

    // Sign out: the session cookie no longer works, even replayed by hand.
    b.goto(&serve.url("/console/workflows")).await;
    click_button(&b, "Sign out").await;
    b.wait_path("/console/sign-in").await;
    let (s, head, _) = serve.get("/console/tenants", Some(&session));
    assert_eq!(s, 303, "{head}");
    assert!(head
        .to_ascii_lowercase()
        .contains("location: /console/sign-in"));
    b.goto(&serve.url("/console/flags")).await;
    b.wait_path("/console/sign-in").await;
    b.client.clone().close().await.expect("close the browser");
}
