//! Unit tests of reading CAEP events into cut-offs.

use serde_json::json;

use super::*;

const TOKENS: &str = "https://tokens";

fn transmitter() -> Transmitter {
    Transmitter {
        issuer: "https://tx".into(),
        verifier: TokenVerifier::builder()
            .issuer_hs256_secret("https://tx", b"a secret of the transmitter")
            .unwrap()
            .build()
            .unwrap(),
        token_issuers: vec![TOKENS.into()],
        poll: None,
    }
}

fn cuts_of(events: Value, email_revocable: bool) -> Result<Vec<EventCut>, Refusal> {
    let payload: Payload = serde_json::from_value(json!({
        "iss": "https://tx", "jti": "set-1", "iat": 1_000, "events": events,
    }))
    .unwrap();
    let claims = Claims {
        issuer: "https://tx".into(),
        jti: Some("set-1".into()),
        issued_at: Some(1_000),
        ..Claims::default()
    };
    cutoffs(&transmitter(), &claims, &payload, email_revocable)
}

fn cut(claim: &'static str, value: &str, at: i64, event: &'static str) -> EventCut {
    EventCut {
        issuer: TOKENS.into(),
        claim,
        value: value.into(),
        at,
        event,
    }
}

#[test]
fn session_revoked_cuts_off_a_subject_a_session_or_an_email() {
    let by_subject = json!({SESSION_REVOKED: {
        "subject": {"format": "iss_sub", "iss": TOKENS, "sub": "alice"},
        "event_timestamp": 990,
    }});
    assert_eq!(
        cuts_of(by_subject, false).unwrap(),
        [cut("sub", "alice", 990, "session-revoked")]
    );
    let by_session = json!({SESSION_REVOKED: {"subject": {
        "format": "complex",
        "user": {"format": "iss_sub", "iss": TOKENS, "sub": "alice"},
        "session": {"format": "opaque", "id": "s-7"},
    }}});
    assert_eq!(
        cuts_of(by_session, false).unwrap(),
        [cut("sid", "s-7", 1_000, "session-revoked")]
    );
    let by_email = json!({SESSION_REVOKED: {
        "subject": {"format": "email", "email": "a@example.com"},
    }});
    assert_eq!(
        cuts_of(by_email.clone(), true).unwrap(),
        [cut("email", "a@example.com", 1_000, "session-revoked")]
    );
    assert_eq!(cuts_of(by_email, false).unwrap(), []);
}

#[test]
fn a_credential_change_that_revokes_cuts_off_the_user() {
    let change = |change_type: &str| {
        json!({CREDENTIAL_CHANGE: {
            "subject": {"format": "complex",
                "user": {"format": "iss_sub", "iss": TOKENS, "sub": "bob"},
                "session": {"format": "opaque", "id": "s-1"}},
            "change_type": change_type, "credential_type": "password",
        }})
    };
    for change_type in ["revoke", "update", "delete"] {
        assert_eq!(
            cuts_of(change(change_type), false).unwrap(),
            [cut("sub", "bob", 1_000, "credential-change")]
        );
    }
    assert_eq!(cuts_of(change("create"), false).unwrap(), []);
}

#[test]
fn unknown_events_are_ignored_and_bad_ones_refused() {
    let other =
        json!({"https://schemas.openid.net/secevent/caep/event-type/token-claims-change": {}});
    assert_eq!(cuts_of(other, false).unwrap(), []);
    let foreign = json!({SESSION_REVOKED: {
        "subject": {"format": "iss_sub", "iss": "https://another-tenant", "sub": "alice"},
    }});
    let refusal = cuts_of(foreign, false).unwrap_err();
    assert!(refusal.1.contains("may not cut off"), "{refusal:?}");
    let no_subject = json!({SESSION_REVOKED: {}});
    assert_eq!(cuts_of(no_subject, false).unwrap_err().0, "invalid_request");
    assert!(cuts_of(json!({}), false).is_err());
    let bad_time = json!({SESSION_REVOKED: {
        "subject": {"format": "iss_sub", "iss": TOKENS, "sub": "a"},
        "event_timestamp": "yesterday",
    }});
    assert!(cuts_of(bad_time, false)
        .unwrap_err()
        .1
        .contains("event_timestamp"));
}

#[test]
fn the_subject_of_ssf_1_0_may_be_the_sets_sub_id() {
    let payload: Payload = serde_json::from_value(json!({
        "iss": "https://tx", "jti": "set-2", "iat": 1_000,
        "sub_id": {"format": "iss_sub", "iss": TOKENS, "sub": "carol"},
        "events": {SESSION_REVOKED: {}},
    }))
    .unwrap();
    let claims = Claims {
        issuer: "https://tx".into(),
        jti: Some("set-2".into()),
        issued_at: Some(1_000),
        ..Claims::default()
    };
    let cuts = cutoffs(&transmitter(), &claims, &payload, false).unwrap();
    assert_eq!(cuts, [cut("sub", "carol", 1_000, "session-revoked")]);
}
