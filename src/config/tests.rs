use super::*;
use crate::tokens::VerifierError;
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeConfig,
}

fn parse(args: &[&str]) -> ServeConfig {
    let argv = std::iter::once("revocd").chain(args.iter().copied());
    Cli::try_parse_from(argv).expect("flags parse").serve
}

#[test]
fn default_durations_read_back_as_themselves() {
    for (duration, text) in [
        (DEFAULT_HEARTBEAT_INTERVAL, "2s"),
        (DEFAULT_MAX_STALENESS, "30s"),
        (DEFAULT_MAX_TOKEN_LIFETIME, "24h"),
        (Duration::from_secs(90), "90s"),
        (Duration::from_secs(120), "2m"),
        (Duration::from_millis(1_500), "1500ms"),
    ] {
        assert_eq!(duration_text(duration), text);
        assert_eq!(humantime::parse_duration(text).unwrap(), duration);
    }
    let config = parse(&["--dev"]);
    assert_eq!(config.heartbeat_interval, DEFAULT_HEARTBEAT_INTERVAL);
    assert_eq!(config.max_token_lifetime, DEFAULT_MAX_TOKEN_LIFETIME);
    assert_eq!(
        config.hub_config().bounds,
        crate::bounds::TokenBounds::default()
    );
}

#[test]
fn defaults_need_api_keys() {
    assert_eq!(parse(&[]).validate(), Err(ConfigError::NoApiKeys));
    assert_eq!(parse(&["--api-keys-file", "k.toml"]).validate(), Ok(()));
    assert_eq!(parse(&["--dev"]).validate(), Ok(()));
}

#[test]
fn the_log_keeps_at_least_ten_thousand_entries() {
    let retention = |n: &str| parse(&["--dev", "--log-retention", n]).validate();
    assert!(matches!(
        retention("9999"),
        Err(ConfigError::OutOfRange {
            flag: "log-retention",
            ..
        })
    ));
    assert_eq!(retention("10000"), Ok(()));
}

#[test]
fn the_compaction_saving_is_in_kib_and_bounded() {
    let saving = |n: &str| parse(&["--dev", "--filter-compaction-min-kib", n]);
    assert_eq!(
        saving("4").hub_config().compaction_min_saving_bits,
        4 * 8 * 1024
    );
    for refused in ["0", "4194305"] {
        assert!(
            matches!(
                saving(refused).validate(),
                Err(ConfigError::OutOfRange {
                    flag: "filter-compaction-min-kib",
                    ..
                })
            ),
            "{refused}"
        );
    }
    assert_eq!(saving("4194304").validate(), Ok(()));
}

#[test]
fn dev_refuses_a_public_address() {
    let config = parse(&["--dev", "--listen", "0.0.0.0:50051"]);
    assert!(matches!(
        config.validate(),
        Err(ConfigError::DevNotLoopback(_))
    ));
    assert_eq!(parse(&["--dev", "--listen", "[::1]:1"]).validate(), Ok(()));
}

#[test]
fn durations_are_human_and_bounded() {
    let config = parse(&["--dev", "--max-token-lifetime", "7d"]);
    assert_eq!(config.max_token_lifetime, Duration::from_secs(7 * 86_400));
    let config = parse(&["--dev", "--max-token-lifetime", "10s"]);
    assert!(matches!(
        config.validate(),
        Err(ConfigError::OutOfRange {
            flag: "max-token-lifetime",
            ..
        })
    ));
}

#[test]
fn keyless_quotas_default_and_refuse_zero() {
    let limits = parse(&["--dev"]).keyless_limits();
    assert_eq!(limits.per_minute, DEFAULT_KEYLESS_PER_MINUTE);
    assert_eq!(
        limits.per_subject_per_minute,
        DEFAULT_KEYLESS_SUBJECT_PER_MINUTE
    );
    assert_eq!(
        limits.per_source_per_minute,
        DEFAULT_KEYLESS_SOURCE_PER_MINUTE
    );
    let set = parse(&["--keyless-subject-per-minute", "3"]).keyless_limits();
    assert_eq!(set.per_subject_per_minute, 3);
    let argv = ["revocd", "--keyless-per-minute", "0"];
    assert!(
        Cli::try_parse_from(argv).is_err(),
        "0 would refuse every call"
    );
}

#[test]
fn one_issuer_is_the_default_issuer() {
    assert_eq!(
        parse(&["--jwt-issuer", "https://a"]).jwt.default_issuer(),
        "https://a"
    );
    assert_eq!(
        parse(&["--jwt-issuer", "https://a", "--jwt-issuer", "https://b"])
            .jwt
            .default_issuer(),
        ""
    );
    assert_eq!(parse(&[]).jwt.default_issuer(), "");
}

#[test]
fn issuer_keys_are_issuer_and_path() {
    let config = parse(&[
        "--jwt-issuer-key",
        "https://a=/keys/a=1.pem",
        "--jwt-issuer-hs256-secret-file",
        "https://b=/run/b",
    ]);
    let bound = IssuerFile {
        issuer: "https://a".into(),
        path: "/keys/a=1.pem".into(),
    };
    assert_eq!(bound.to_string(), "https://a=/keys/a=1.pem");
    assert_eq!(config.jwt.jwt_issuer_key, [bound]);
    assert_eq!(config.jwt.issuers(), ["https://a", "https://b"]);
    assert_eq!(config.jwt.default_issuer(), "");
    for wrong in ["https://a", "=/a.pem", "https://a="] {
        assert!(wrong.parse::<IssuerFile>().is_err(), "{wrong}");
    }
}

#[test]
fn an_issuer_bound_to_a_key_is_accepted_and_may_be_the_default() {
    let config = parse(&[
        "--jwt-issuer",
        "https://a",
        "--jwt-issuer-key",
        "https://a=a.pem",
    ]);
    assert_eq!(config.jwt.issuers(), ["https://a"]);
    assert_eq!(config.jwt.default_issuer(), "https://a");
}

#[test]
fn unbound_keys_beside_two_issuers_stop_the_verifier() {
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret").expect("secret file");
    let secret = secret.to_str().expect("UTF-8 path");
    let one = parse(&[
        "--jwt-issuer",
        "https://a",
        "--jwt-hs256-secret-file",
        secret,
    ]);
    assert!(one.jwt.verifier(None).is_ok());
    let bound = format!("https://b={secret}");
    let two = parse(&[
        "--jwt-issuer",
        "https://a",
        "--jwt-hs256-secret-file",
        secret,
        "--jwt-issuer-hs256-secret-file",
        &bound,
    ]);
    let refused = two.jwt.verifier(None).expect_err("ambiguous");
    assert!(matches!(refused, VerifierError::Unbound(_)), "{refused:?}");
    let message = refused.to_string();
    assert!(
        message.contains("--jwt-issuer-key ISSUER=PATH"),
        "{message}"
    );
}

#[test]
fn revocable_claims_are_names_other_than_the_built_in_ones() {
    let claims = |list: &str| parse(&["--dev", "--revocable-claim", list]).validate();
    assert_eq!(claims("groups,email"), Ok(()));
    assert_eq!(
        parse(&["--dev", "--revocable-claim", "groups,email"])
            .policy()
            .revocable_claims,
        ["groups", "email"]
    );
    for bad in ["sid", "*", "sub", "a\u{7}b", &"x".repeat(65)] {
        assert_eq!(
            claims(bad),
            Err(ConfigError::RevocableClaim(bad.to_owned())),
            "{bad:?}"
        );
    }
    let many: Vec<String> = (0..=MAX_REVOCABLE_CLAIMS)
        .map(|i| format!("c{i}"))
        .collect();
    assert!(matches!(
        claims(&many.join(",")),
        Err(ConfigError::OutOfRange { .. })
    ));
}

#[test]
fn transmitters_come_from_both_kinds_of_flags_and_must_fit_together() {
    let base = [
        "--ssf-issuer",
        "https://tx-a",
        "--ssf-jwks-file",
        "/keys/a.json",
        "--ssf-token-issuer",
        "https://tokens-a",
        "--ssf-transmitter",
        "https://tx-b=/keys/b.pem",
        "--ssf-transmitter-token-issuer",
        "https://tx-b=https://tokens-b",
        "--ssf-transmitter-poll-url",
        "https://tx-b=https://tx-b/poll?x=1",
    ];
    let with = |extra: &[&str]| parse(&[&base[..], extra].concat()).transmitters();
    let specs = with(&["--ssf-audience", "https://me"]).expect("transmitters");
    let summary: Vec<(&str, &str, Vec<String>, Option<String>)> = specs
        .iter()
        .map(|s| {
            (
                s.issuer.as_str(),
                s.keys.to_str().unwrap(),
                s.token_issuers.clone(),
                s.poll_url.as_ref().map(ToString::to_string),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "https://tx-a",
                "/keys/a.json",
                vec!["https://tokens-a".to_owned()],
                None
            ),
            (
                "https://tx-b",
                "/keys/b.pem",
                vec!["https://tokens-b".to_owned()],
                Some("https://tx-b/poll?x=1".to_owned())
            ),
        ]
    );
    let refusal = |extra: &[&str]| match with(extra) {
        Err(ConfigError::Transmitter(why)) => why,
        other => panic!("{extra:?}: {other:?}"),
    };
    assert!(refusal(&[]).contains("--ssf-audience"));
    let unknown = [
        "--ssf-audience",
        "a",
        "--ssf-transmitter-poll-url",
        "https://tx-c=https://c",
    ];
    assert!(refusal(&unknown).contains("https://tx-c"));
    let twice = [
        "--ssf-audience",
        "a",
        "--ssf-transmitter",
        "https://tx-a=/k",
    ];
    assert!(refusal(&twice).contains("twice"));
    assert!(parse(&["--dev"]).transmitters().expect("none").is_empty());
}
