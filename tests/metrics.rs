//! The server's Prometheus endpoint, scraped from the real binary after
//! real calls: the counters move with what happened.

mod support;

use std::net::SocketAddr;

use revocd::pb::{RevokeRequest, SubscribeRequest};
use revocd::time::unix_now;
use support::nginx::http_get;
use support::{free_port, metric_value, token_for, Deployment, Replica};

fn scrape(address: SocketAddr) -> String {
    let response = http_get(address, "/metrics", &[]).expect("GET /metrics");
    assert_eq!(response.status, 200);
    assert!(response
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/plain"));
    response.body
}

#[tokio::test]
async fn metrics_count_rpcs_revocations_and_streams() {
    let deployment = Deployment::new();
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let metrics_listen = metrics.to_string();
    let flags = [
        "--metrics-listen",
        &metrics_listen,
        "--keyless-subject-per-minute",
        "1",
    ];
    let replica = Replica::spawn(&deployment.args(&flags)).await;

    let mut client = replica.client(Some("key-admin")).await;
    for jti in ["m1", "m2"] {
        let request = RevokeRequest {
            jti: jti.into(),
            expires_at: unix_now() + 600,
            ..Default::default()
        };
        client.revoke(request).await.expect("revoke");
    }
    let repeat = RevokeRequest {
        jti: "m1".into(),
        expires_at: unix_now() + 600,
        ..Default::default()
    };
    client.revoke(repeat).await.expect("repeat");
    let bad = RevokeRequest {
        token: "not-a-jwt".into(),
        ..Default::default()
    };
    client.revoke(bad).await.expect_err("malformed");
    let self_revoked = RevokeRequest {
        token: token_for("alice", "m3"),
        ..Default::default()
    };
    let mut anonymous = replica.client(None).await;
    anonymous
        .revoke(self_revoked)
        .await
        .expect("self-revocation");
    let second = RevokeRequest {
        token: token_for("alice", "m4"),
        ..Default::default()
    };
    let refused = anonymous.revoke(second).await.expect_err("over the quota");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    let mut stream = replica
        .client(Some("key-subscribe"))
        .await
        .subscribe(SubscribeRequest {
            protocol: revocd::snapshot::STREAM_PROTOCOL,
            ..Default::default()
        })
        .await
        .expect("subscribe")
        .into_inner();
    stream
        .message()
        .await
        .expect("a frame")
        .expect("open stream");

    let text = scrape(metrics);
    for (series, expected) in [
        (
            r#"revocd_rpc_requests_total{method="Revoke",code="Ok"}"#,
            4.0,
        ),
        (
            r#"revocd_rpc_requests_total{method="Revoke",code="InvalidArgument"}"#,
            1.0,
        ),
        (
            r#"revocd_rpc_requests_total{method="Revoke",code="ResourceExhausted"}"#,
            1.0,
        ),
        (r#"revocd_keyless_refusals_total{limit="subject"}"#, 1.0),
        (
            r#"revocd_rpc_requests_total{method="Subscribe",code="Ok"}"#,
            1.0,
        ),
        (r#"revocd_revocations_total{result="new"}"#, 3.0),
        (r#"revocd_revocations_total{result="repeat"}"#, 1.0),
        (r#"revocd_rpc_duration_seconds_count{method="Revoke"}"#, 6.0),
    ] {
        assert_eq!(
            metric_value(&text, series),
            Some(expected),
            "{series}:\n{text}"
        );
    }
    assert!(metric_value(&text, "revocd_filter_snapshots_sent_total").is_some_and(|n| n >= 1.0));
    // At least the snapshot's filter went out on the stream.
    let bits = metric_value(&text, "revocd_filter_bits").unwrap_or_default();
    let sent = metric_value(&text, r#"revocd_filter_bytes_sent_total{kind="snapshot"}"#);
    assert!(sent.is_some_and(|bytes| bytes >= bits / 8.0), "{sent:?}");
    assert!(metric_value(&text, "revocd_filter_bits").is_some_and(|bits| bits > 0.0));
    let rate = metric_value(&text, "revocd_filter_estimated_fp_rate").expect("estimated rate");
    assert!((0.0..0.001).contains(&rate), "{rate}");
}
