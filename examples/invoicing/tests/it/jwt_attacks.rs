//! Forged, confused and stale tokens are refused with 401 `invalid-credentials`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn jwt_attacks_are_refused() {
    let env = start().await;
    let b64 = |v: &serde_json::Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"));
    let good = claims(IDP_ISS, env.acme);

    let mut attacks: Vec<(&str, String)> = Vec::new();
    // alg: none, no signature.
    attacks.push((
        "alg none",
        format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT"})),
            b64(&good)
        ),
    ));
    attacks.push((
        "alg None",
        format!("{}.{}.", b64(&json!({"alg": "None"})), b64(&good)),
    ));
    // HS256 "signed" with the RSA public key as HMAC secret (key confusion).
    let confused = EncodingKey::from_secret(&data("rsa_public.pem"));
    attacks.push((
        "HS/RS confusion",
        sign(Algorithm::HS256, &confused, &good, None),
    ));
    // RS256 with a key the issuer does not have.
    attacks.push((
        "wrong key",
        sign(Algorithm::RS256, &rsa2_key(), &good, None),
    ));
    // Expired (beyond the leeway), not yet valid.
    let mut c = good.clone();
    c["exp"] = json!(now() - 300);
    attacks.push(("expired", sign(Algorithm::RS256, &rsa_key(), &c, None)));
    let mut c = good.clone();
    c["nbf"] = json!(now() + 600);
    attacks.push((
        "not yet valid",
        sign(Algorithm::RS256, &rsa_key(), &c, None),
    ));
    // Wrong audience; no audience; no expiry.
    let mut c = good.clone();
    c["aud"] = json!("someone-else");
    attacks.push((
        "wrong audience",
        sign(Algorithm::RS256, &rsa_key(), &c, None),
    ));
    let mut c = good.clone();
    c.as_object_mut().expect("obj").remove("exp");
    attacks.push(("no exp", sign(Algorithm::RS256, &rsa_key(), &c, None)));
    // Tampered tenant claim on a valid token.
    let valid = sign(Algorithm::RS256, &rsa_key(), &good, None);
    let parts: Vec<&str> = valid.split('.').collect();
    let mut c = good.clone();
    c["tenant_id"] = json!(env.globex.to_string());
    attacks.push((
        "tampered claim",
        format!("{}.{}.{}", parts[0], b64(&c), parts[2]),
    ));
    // Another tenant's id, validly signed by another trusted issuer's key, claiming to
    // be from IDP_ISS.
    let mut c = claims(IDP_ISS, env.globex);
    c["sub"] = json!("attacker");
    let other = EncodingKey::from_secret(b"other-issuer-secret-32-bytes-long!!");
    attacks.push((
        "other issuer's key",
        sign(Algorithm::HS256, &other, &c, None),
    ));
    // Untrusted issuer entirely (valid signature by a key we trust for another issuer).
    attacks.push((
        "untrusted issuer",
        sign(
            Algorithm::RS256,
            &rsa_key(),
            &claims("https://evil.test", env.globex),
            None,
        ),
    ));
    // Garbage.
    attacks.push(("garbage", "not.a.jwt".into()));

    for (name, t) in &attacks {
        let r = env
            .call(
                "GET",
                "/me",
                &[("authorization", &format!("Bearer {t}"))],
                None,
            )
            .await;
        assert_eq!(
            (r.status, r.code()),
            (401, "invalid-credentials"),
            "{name}: {r:?}"
        );
        assert_eq!(r.content_type, "application/problem+json", "{name}");
    }
    // Within the leeway, a just-expired token still works; the genuine token works.
    let mut c = good.clone();
    c["exp"] = json!(now() - 5);
    let r = env
        .call(
            "GET",
            "/me",
            &[(
                "authorization",
                &format!("Bearer {}", sign(Algorithm::RS256, &rsa_key(), &c, None)),
            )],
            None,
        )
        .await;
    assert_eq!(r.status, 200, "leeway: {r:?}");
    let r = env
        .call(
            "GET",
            "/me",
            &[("authorization", &format!("Bearer {valid}"))],
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
}
