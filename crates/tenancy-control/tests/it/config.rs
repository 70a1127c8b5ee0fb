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
}
