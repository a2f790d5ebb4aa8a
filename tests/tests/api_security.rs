//! Who may call the coordinator's API (`coordinator/src/api/auth.rs`): `/api`
//! takes only `EBB_API_TOKEN`, `/internal` only `EBB_INTERNAL_TOKEN`, the
//! scheme in any case; an API off loopback does not start without them; one
//! on loopback refuses web pages (another origin, a rebinding host name);
//! every error answer is JSON, a NUL byte in a path is a 400; `/metrics` can
//! move to a listener of its own. The fleets of the
//! other suites run with both tokens set, workers holding only theirs.

use ebb_tests::fleet::{authorized_client, Fleet};
use ebb_tests::process::EbbProcess;
use reqwest::StatusCode;
use serde_json::Value;
use std::time::{Duration, Instant};

const CONFIG: &str = "destinations:\n  d: { type: jsonl, path: out.jsonl }\n";

/// Status and JSON body of `request`; fails the test on a body that is not JSON.
async fn answer(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.expect("the coordinator answers");
    let status = response.status();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {text:?}"));
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_and_the_internal_api_each_take_their_own_token() {
    let fleet = Fleet::start(CONFIG, 0).await;
    let api = &fleet.api;
    let anonymous = reqwest::Client::new();
    let internal_token = fleet.internal_token().to_string();
    let as_worker = authorized_client(&internal_token);
    let active = serde_json::json!({"runId": "no-such-run"});

    let (status, body) = answer(anonymous.get(format!("{api}/api/v1/syncs"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["error"].as_str().unwrap().contains("EBB_API_TOKEN"), "{body}");
    let (status, _) = answer(fleet.client().get(format!("{api}/api/v1/syncs"))).await;
    assert_eq!(status, StatusCode::OK);
    let lower_case = anonymous
        .get(format!("{api}/api/v1/syncs"))
        .header("authorization", format!("bearer {}", fleet.api_token));
    assert_eq!(answer(lower_case).await.0, StatusCode::OK, "the scheme in any case");
    let (status, _) = answer(as_worker.get(format!("{api}/api/v1/syncs"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a worker's token opens no /api");

    let lease_call = |client: &reqwest::Client| client.post(format!("{api}/internal/v1/runs/active")).json(&active);
    let (status, body) = answer(lease_call(&anonymous)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body["error"].as_str().unwrap().contains("EBB_INTERNAL_TOKEN"), "{body}");
    let (status, _) = answer(lease_call(fleet.client())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the API's token opens no /internal");
    let (status, body) = answer(lease_call(&as_worker)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["active"], false);

    for open in ["/healthz", "/metrics"] {
        let response = anonymous.get(format!("{api}{open}")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{open} stays open to probes");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_answer_is_json_and_a_nul_byte_is_a_bad_request() {
    let fleet = Fleet::start(CONFIG, 0).await;
    let (api, http) = (&fleet.api, fleet.client());

    let (status, body) = answer(http.get(format!("{api}/api/v1/runs/abc%00def"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].as_str().unwrap().contains("NUL"), "{body}");
    let (status, body) = answer(http.get(format!("{api}/api/v1/syncs/x/runs?status=a%00b"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let (status, body) = answer(http.get(format!("{api}/api/v1/nothing-here"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body["error"].as_str().unwrap().contains("/api/v1/nothing-here"),
        "{body}"
    );
    let (status, body) = answer(http.delete(format!("{api}/api/v1/syncs"))).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    let malformed = http
        .post(format!("{api}/api/v1/syncs/d/trigger"))
        .header("content-type", "application/json")
        .body("{not json");
    let (status, body) = answer(malformed).await;
    assert!(status.is_client_error(), "{status} {body}");
    assert!(body["error"].is_string(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_off_loopback_does_not_start_without_its_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ebb.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let config = config.to_str().unwrap();
    let port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let no_tokens = [("EBB_API_TOKEN", String::new()), ("EBB_INTERNAL_TOKEN", String::new())];

    let everywhere = format!("0.0.0.0:{}", port());
    let mut standalone = EbbProcess::spawn(
        "standalone",
        &["standalone", "--config", config, "--listen", &everywhere],
        &no_tokens,
        dir.path(),
    );
    let log = exited_with_failure(&mut standalone).await;
    assert!(
        log.contains(&format!(
            "refusing to serve the API on {everywhere} without EBB_API_TOKEN"
        )),
        "{log}"
    );

    // A fleet's coordinator also needs the workers' token; it is refused
    // before it reaches for its state database.
    let everywhere = format!("0.0.0.0:{}", port());
    let mut coordinator = EbbProcess::spawn(
        "coordinator",
        &[
            "coordinator",
            "--config",
            config,
            "--listen",
            &everywhere,
            "--state-url",
            "postgres://127.0.0.1:1/unused",
            "--queue-url",
            "amqp://127.0.0.1:1",
        ],
        &[("EBB_API_TOKEN", "t".repeat(32)), ("EBB_INTERNAL_TOKEN", String::new())],
        dir.path(),
    );
    let log = exited_with_failure(&mut coordinator).await;
    assert!(log.contains("without EBB_INTERNAL_TOKEN"), "{log}");

    // Waived explicitly, it serves.
    let port = port();
    let _waived = EbbProcess::spawn(
        "waived",
        &[
            "standalone",
            "--config",
            config,
            "--listen",
            &format!("0.0.0.0:{port}"),
            "--allow-unauthenticated",
        ],
        &no_tokens,
        dir.path(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await.is_err() {
        assert!(Instant::now() < deadline, "the waived standalone did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loopback_api_refuses_web_pages_and_rebinding_host_names() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ebb.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let (_standalone, api) = EbbProcess::standalone(&config, &[("EBB_API_TOKEN", String::new())], dir.path()).await;
    let http = reqwest::Client::new();
    let port = api.rsplit(':').next().unwrap();

    let (status, _) = answer(http.get(format!("{api}/api/v1/syncs"))).await;
    assert_eq!(status, StatusCode::OK, "a program on this machine is served");
    let same_origin = http
        .get(format!("{api}/api/v1/syncs"))
        .header("origin", format!("http://localhost:{port}"));
    assert_eq!(answer(same_origin).await.0, StatusCode::OK, "Ebb's own origin");

    let from_a_page = http
        .post(format!("{api}/api/v1/syncs/any/trigger"))
        .header("origin", "https://evil.example")
        .json(&serde_json::json!({}));
    let (status, body) = answer(from_a_page).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("local programs only"),
        "{body}"
    );
    let rebinding = http
        .get(format!("{api}/api/v1/syncs"))
        .header("host", format!("evil.example:{port}"));
    assert_eq!(
        answer(rebinding).await.0,
        StatusCode::FORBIDDEN,
        "a rebinding host name"
    );
    let cross_site = http
        .post(format!("{api}/api/v1/runs/x/cancel"))
        .header("sec-fetch-site", "cross-site");
    assert_eq!(answer(cross_site).await.0, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_move_to_a_listener_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ebb.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let probes = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (_standalone, api) =
        EbbProcess::standalone(&config, &[("EBB_METRICS_LISTEN", probes.to_string())], dir.path()).await;
    let status = |url: String| async move { reqwest::get(url).await.unwrap().status() };

    assert_eq!(
        status(format!("{api}/metrics")).await,
        StatusCode::NOT_FOUND,
        "API clients cannot read them"
    );
    assert_eq!(status(format!("{api}/healthz")).await, StatusCode::OK);
    for path in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(status(format!("http://{probes}{path}")).await, StatusCode::OK, "{path}");
    }
    assert_eq!(
        status(format!("http://{probes}/api/v1/syncs")).await,
        StatusCode::NOT_FOUND,
        "no API on the probes' listener"
    );
}

/// Waits (30 s at most) for `process` to exit; asserts it failed; its log.
async fn exited_with_failure(process: &mut EbbProcess) -> String {
    let status = tokio::time::timeout(Duration::from_secs(30), process.child.wait())
        .await
        .unwrap_or_else(|_| panic!("{} still runs: {}", process.name, process.log_tail(20)))
        .unwrap();
    let log = std::fs::read_to_string(&process.log).unwrap();
    assert!(
        !status.success(),
        "{} should have refused to start: {log}",
        process.name
    );
    log
}
