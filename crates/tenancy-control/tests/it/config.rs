use tenancy_control::ControlConfig;

#[test]
fn example_config_loads_and_environment_overrides_it() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tenancy.example.toml");
    let cfg = ControlConfig::load_with_env(Some(&path), &[]).expect("example config");
    assert_eq!(
        cfg.regions,
        vec!["eu-west".to_owned(), "us-east".to_owned()]
    );
    assert_eq!(cfg.workers, 4);
    // The example states the defaults of the public surface's limits, all on.
    let d = tenancy_control::LimitsConfig::default();
    let l = &cfg.limits;
    assert_eq!(
        (
            l.header_read_timeout_ms,
            l.body_timeout_ms,
            l.request_timeout_ms,
            l.max_connections
        ),
        (
            d.header_read_timeout_ms,
            d.body_timeout_ms,
            d.request_timeout_ms,
            d.max_connections
        )
    );
    assert_eq!(
        (l.signup, l.availability, l.public),
        (d.signup, d.availability, d.public)
    );
    assert!(
        l.header_read_timeout_ms > 0
            && l.signup.per_ip_per_minute > 0
            && l.signup.global_per_minute > 0
    );
    let s = tenancy_control::SignupConfig::default();
    assert_eq!(
        (
            cfg.signup.quota_window_secs,
            cfg.signup.max_signups,
            cfg.signup.max_signups_per_ip
        ),
        (s.quota_window_secs, s.max_signups, s.max_signups_per_ip)
    );
    assert!(s.max_signups > 0 && s.max_signups_per_ip > 0);
    let env = vec![
        ("TENANCY_WORKERS".to_owned(), "3".to_owned()),
        ("TENANCY_REGIONS".to_owned(), "ap-south".to_owned()),
    ];
    let cfg = ControlConfig::load_with_env(Some(&path), &env).expect("layered");
    assert_eq!((cfg.workers, cfg.regions), (3, vec!["ap-south".to_owned()]));
    let bad = vec![(
        "TENANCY_ADMIN_TOKEN_SHA256".to_owned(),
        "sha256:zz".to_owned(),
    )];
    assert!(ControlConfig::load_with_env(None, &bad).is_err());
    // A proxy header without the proxies it may come from is refused, as is a bad network.
    let dir = std::env::temp_dir().join(format!("tenancy-limits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    for (text, why) in [
        ("[limits]\nclient_ip_header = \"x-forwarded-for\"\n", "trusted_proxies"),
        ("[limits]\ntrusted_proxies = [\"10.0.0.0/40\"]\n", "not an address"),
        ("[limits.signup]\nper_ip_per_minute = 5\nper_ip_burst = 0\nglobal_per_minute = 0\nglobal_burst = 0\n", "burst"),
    ] {
        let p = dir.join("bad.toml");
        std::fs::write(&p, text).expect("write");
        let err = ControlConfig::load_with_env(Some(&p), &[]).expect_err(text);
        assert!(err.contains(why), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
