//! Every tenant source resolves the tenant it names: credentials on their own, selectors
//! (subdomain, custom domain, path prefix) together with a credential of that tenant.

use jsonwebtoken::Algorithm;
use serde_json::json;
use tenancy_sdk::bootstrap::{OWNER_ROLE, RUNTIME_ROLE};

use crate::support::*;

#[tokio::test]
async fn every_source_resolves_its_tenant() {
    let env = start().await;
    let slug_of = |r: &Resp| r.body["slug"].as_str().unwrap_or_default().to_owned();

    // JWT, one per algorithm (and the JWKS issuer with a kid).
    for (alg, key, iss, kid) in [
        (Algorithm::HS256, hs_key(), DEV_ISS, None),
        (Algorithm::RS256, rsa_key(), IDP_ISS, None),
        (Algorithm::ES256, ec_key(), IDP_ISS, None),
        (Algorithm::EdDSA, ed_key(), IDP_ISS, None),
        (Algorithm::RS256, rsa2_key(), JWKS_ISS, Some("jwks-1")),
    ] {
        let t = sign(alg, &key, &claims(iss, env.acme), kid);
        let r = env
            .call(
                "GET",
                "/me",
                &[("authorization", &format!("Bearer {t}"))],
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{alg:?} from {iss}: {r:?}");
        assert_eq!(slug_of(&r), "acme");
        assert_eq!(r.body["via"], json!(["jwt"]));
        assert_eq!(r.body["subject"], "user-1");
    }

    // Subdomain of the base domain, with a credential of the same tenant.
    let auth = format!("Bearer {}", token(env.globex));
    let r = env
        .call(
            "GET",
            "/me",
            &[("host", "globex.invoicing.test"), ("authorization", &auth)],
            None,
        )
        .await;
    assert_eq!((r.status, slug_of(&r)), (200, "globex".into()), "{r:?}");
    let r = env
        .call(
            "GET",
            "/me",
            &[
                ("host", "globex.invoicing.test:8080"),
                ("authorization", &auth),
            ],
            None,
        )
        .await;
    assert_eq!(r.body["via"], json!(["jwt", "subdomain"]), "{r:?}");

    // Custom domain: the configuration service owns the lifecycle (claim, DNS TXT
    // verification, disable, removal); only a verified domain resolves, and every change
    // reaches the layer's cache through the catalog change notification.
    let config =
        tenancy_config_service::Store::new(env.db.config_as(OWNER_ROLE), 2).expect("store");
    let dns = tenancy_config_service::dns::StaticResolver::new();
    let who = tenancy_config_service::ChangeMeta::new("resolver-test", "custom domain");
    let host = "billing.acme.example";
    let acme_auth = format!("Bearer {}", token(env.acme));
    let via = |r: &Resp| r.body["via"].clone();
    let claim = config
        .add_domain(env.acme, host, &who)
        .await
        .expect("claim");
    let r = env
        .call(
            "GET",
            "/me",
            &[("host", host), ("authorization", &acme_auth)],
            None,
        )
        .await;
    assert_eq!(
        (r.status, via(&r)),
        (200, json!(["jwt"])),
        "a pending domain selects nothing: {r:?}"
    );
    // Another tenant's claim of the same host (pending) does not resolve either.
    let claim_b = config
        .add_domain(env.globex, host, &who)
        .await
        .expect("claim by globex");
    dns.add_txt(&claim.challenge_name(), &claim.challenge_value());
    let verified = config
        .verify_domain(env.acme, host, &dns, &who)
        .await
        .expect("verify");
    assert_eq!(verified.state, tenancy_config::model::DomainState::Verified);
    // Which sources a request to `host` with acme's token resolved through.
    let via_host = || async {
        let r = env
            .call(
                "GET",
                "/me",
                &[("host", host), ("authorization", &acme_auth)],
                None,
            )
            .await;
        (r.status == 200).then(|| r.body["via"].clone())
    };
    assert!(
        eventually(std::time::Duration::from_secs(3), || async {
            via_host().await == Some(json!(["jwt", "custom_domain"]))
        })
        .await,
        "verified domain resolves (cache invalidated by the change notification)"
    );
    let r = env
        .call(
            "GET",
            "/me",
            &[
                ("host", "Billing.Acme.Example:443"),
                ("authorization", &acme_auth),
            ],
            None,
        )
        .await;
    assert_eq!(slug_of(&r), "acme", "{r:?}");
    assert_eq!(r.body["via"], json!(["jwt", "custom_domain"]));
    // The verified domain of acme with globex's credential is a mismatch, and without a
    // credential it is refused.
    let globex_auth = format!("Bearer {}", token(env.globex));
    let r = env
        .call(
            "GET",
            "/me",
            &[("host", host), ("authorization", &globex_auth)],
            None,
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "tenant-mismatch"), "{r:?}");
    let r = env.call("GET", "/customers", &[("host", host)], None).await;
    assert_eq!((r.status, r.code()), (401, "unauthenticated"), "{r:?}");
    // A host name is verified for one tenant only, even when the other tenant's record
    // is published too.
    dns.add_txt(&claim_b.challenge_name(), &claim_b.challenge_value());
    assert!(config
        .verify_domain(env.globex, host, &dns, &who)
        .await
        .is_err());
    config
        .disable_domain(env.acme, host, &who)
        .await
        .expect("disable");
    assert!(
        eventually(std::time::Duration::from_secs(3), || async {
            via_host().await == Some(json!(["jwt"]))
        })
        .await,
        "a disabled domain stops resolving"
    );
    config
        .verify_domain(env.acme, host, &dns, &who)
        .await
        .expect("verify again");
    assert!(
        eventually(std::time::Duration::from_secs(3), || async {
            via_host().await == Some(json!(["jwt", "custom_domain"]))
        })
        .await,
        "a re-verified domain resolves again"
    );
    config
        .remove_domain(env.acme, host, &who)
        .await
        .expect("remove");
    assert!(
        eventually(std::time::Duration::from_secs(3), || async {
            via_host().await == Some(json!(["jwt"]))
        })
        .await,
        "a removed domain stops resolving"
    );

    // Trusted header, by slug and by id.
    let r = env
        .call("GET", "/me", &[("x-tenant-id", "globex")], None)
        .await;
    assert_eq!((r.status, slug_of(&r)), (200, "globex".into()), "{r:?}");
    let id = env.acme.to_string();
    let r = env.call("GET", "/me", &[("x-tenant-id", &id)], None).await;
    assert_eq!(slug_of(&r), "acme");

    // Path prefix with a credential of that tenant: stripped before routing.
    let r = env
        .call(
            "GET",
            "/t/globex/me",
            &[("authorization", &globex_auth)],
            None,
        )
        .await;
    assert_eq!((r.status, slug_of(&r)), (200, "globex".into()), "{r:?}");
    assert_eq!(r.body["via"], json!(["jwt", "path_prefix"]));
    let r = env
        .call(
            "GET",
            &format!("/t/{}/customers", env.acme),
            &[("authorization", &acme_auth)],
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
}

#[tokio::test]
async fn api_keys_are_hashed_scoped_revocable_and_record_their_use() {
    let env = start().await;
    let (rec, key) =
        tenancy_axum::api_key::issue_api_key(&env.owner, env.acme, "ci", &["invoices:read".into()])
            .await
            .expect("issue");
    assert!(key.expose().starts_with("tnk_"));
    // Stored hashed: the key text is nowhere in the catalog.
    let stored: Vec<u8> = env
        .owner
        .query_one(
            "SELECT secret_hash FROM tenancy_catalog.api_keys WHERE key_id = $1",
            &[&rec.key_id],
        )
        .await
        .expect("row")
        .get(0);
    assert_eq!(stored, key.hash().to_vec());
    // The runtime role cannot read hashes.
    let app = connect(env.db.config_as(RUNTIME_ROLE)).await;
    assert!(app
        .query("SELECT secret_hash FROM tenancy_catalog.api_keys", &[])
        .await
        .is_err());

    let r = env
        .call("GET", "/me", &[("x-api-key", key.expose())], None)
        .await;
    assert_eq!(
        (r.status, r.body["slug"].as_str()),
        (200, Some("acme")),
        "{r:?}"
    );
    assert_eq!(r.body["via"], json!(["api_key"]));
    let bearer = format!("Bearer {}", key.expose());
    let r = env
        .call("GET", "/customers", &[("authorization", &bearer)], None)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    // Scope: read-only key cannot write.
    let r = env
        .call(
            "POST",
            "/customers",
            &[("x-api-key", key.expose())],
            Some(json!({"name": "x", "email": "x@y.z"})),
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "insufficient-scope"), "{r:?}");
    let used: Option<time::OffsetDateTime> = env
        .owner
        .query_one(
            "SELECT last_used_at FROM tenancy_catalog.api_keys WHERE key_id = $1",
            &[&rec.key_id],
        )
        .await
        .expect("row")
        .get(0);
    assert!(used.is_some(), "last use recorded");
    // A wrong secret with the right id, and garbage, are refused.
    let forged = format!("tnk_{}_{}", rec.key_id, "0".repeat(64));
    for bad in [forged.as_str(), "tnk_nope"] {
        let r = env.call("GET", "/me", &[("x-api-key", bad)], None).await;
        assert_eq!(
            (r.status, r.code()),
            (401, "invalid-credentials"),
            "{bad}: {r:?}"
        );
    }
    // Revoked: refused at once (the cache hears about it).
    assert!(
        tenancy_catalog::revoke_api_key(&env.owner, env.acme, &rec.key_id)
            .await
            .expect("revoke")
    );
    assert!(
        eventually(std::time::Duration::from_secs(3), || async {
            env.call("GET", "/me", &[("x-api-key", key.expose())], None)
                .await
                .status
                == 401
        })
        .await,
        "revoked key refused"
    );
}
