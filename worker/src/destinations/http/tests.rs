//! The HTTP destination with OAuth 2.0 client credentials, against a loopback
//! token endpoint and API: a token revoked early is replaced once, and no
//! secret reaches an error.

use crate::behaviour::Action;
use crate::destinations::{build, Record};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// Grants `tok-N` for a right secret; the API accepts only the newest token.
async fn server() -> (String, Arc<AtomicU32>) {
    let granted = Arc::new(AtomicU32::new(0));
    let app = Router::new()
        .route(
            "/token",
            post(
                |State(granted): State<Arc<AtomicU32>>, body: axum::body::Bytes| async move {
                    let form = String::from_utf8_lossy(&body).to_string();
                    if !form.contains("client_secret=cs-s3cret") || !form.contains("grant_type=client_credentials") {
                        return (StatusCode::UNAUTHORIZED, r#"{"error":"invalid_client"}"#.to_string());
                    }
                    let n = granted.fetch_add(1, Ordering::SeqCst) + 1;
                    (
                        StatusCode::OK,
                        format!(r#"{{"access_token":"tok-{n}","token_type":"Bearer","expires_in":3600}}"#),
                    )
                },
            ),
        )
        .route(
            "/ebb",
            post(|State(granted): State<Arc<AtomicU32>>, headers: HeaderMap| async move {
                let newest = format!("Bearer tok-{}", granted.load(Ordering::SeqCst));
                let presented = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                if presented == newest {
                    (StatusCode::OK, String::new())
                } else {
                    (StatusCode::UNAUTHORIZED, format!("token {presented} revoked"))
                }
            }),
        )
        .with_state(granted.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, granted)
}

fn spec(url: &str, secret_variable: &str) -> ebb_shared::config::SyncSpec {
    let text = format!(
        "sources:\n  files: {{ type: csv, path: . }}\n\
         models:\n  m: {{ source: files, file: m.csv, primary_key: id }}\n\
         destinations:\n  api:\n    type: http\n    url: {url}/ebb\n    oauth2:\n      token_url: {url}/token\n      \
         client_id: ebb\n      client_secret: \"${{{secret_variable}}}\"\n\
         syncs:\n  s: {{ model: m, destination: api, mode: upsert }}\n"
    );
    let config = crate::config::from_yaml_str(std::path::Path::new("t.yaml"), &text, std::path::Path::new("."))
        .unwrap_or_else(|e| panic!("{e}"));
    config.sync_spec("s").unwrap()
}

#[tokio::test]
async fn a_revoked_token_is_replaced_once_and_the_batch_goes_through() {
    let (url, granted) = server().await;
    std::env::set_var("EBB_TEST_HTTP_OAUTH_SECRET_A", "cs-s3cret");
    let api = build(&spec(&url, "EBB_TEST_HTTP_OAUTH_SECRET_A")).await.unwrap();
    let records = [Record::new("1", r#"{"id":1}"#)];
    assert_eq!(api.send(Action::Upsert, &records).await.unwrap(), vec![Ok(())]);
    assert_eq!(granted.load(Ordering::SeqCst), 1);
    // The server moves on to a new token behind Ebb's back: the next send is
    // refused once, asks for a token, and is sent again.
    granted.fetch_add(1, Ordering::SeqCst);
    assert_eq!(api.send(Action::Upsert, &records).await.unwrap(), vec![Ok(())]);
    assert_eq!(granted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn refused_client_credentials_fail_the_batch_naming_the_error_not_the_secret() {
    let (url, _) = server().await;
    std::env::set_var("EBB_TEST_HTTP_OAUTH_SECRET_B", "not-the-s3cret");
    let api = build(&spec(&url, "EBB_TEST_HTTP_OAUTH_SECRET_B")).await.unwrap();
    let records = [Record::new("1", "{}")];
    let error = api.send(Action::Upsert, &records).await.unwrap_err().to_string();
    assert!(
        error.contains("invalid_client") && !error.contains("not-the-s3cret"),
        "{error}"
    );
}
