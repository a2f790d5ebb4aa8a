//! The HTTP Request destination against a loopback API that records every
//! request and answers as told: per-operation methods, URLs and bodies from
//! Liquid templates, per-row and batched requests, JSON and form bodies,
//! answers classified (retry codes, 429, refusals), and configs that cannot
//! work refused before a run.

use crate::behaviour::Action;
use crate::destinations::{build, DeliveryError, Destination, Record};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    content_type: String,
    authorization: String,
    body: String,
}

/// A status to answer, with extra headers.
type Answer = (u16, Vec<(&'static str, &'static str)>);

#[derive(Clone, Default)]
struct Api {
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Statuses to answer next (then 200).
    answers: Arc<Mutex<VecDeque<Answer>>>,
}

async fn record(
    State(api): State<Api>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    api.seen.lock().unwrap().push(Seen {
        method: method.to_string(),
        path: uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
        content_type: header("content-type"),
        authorization: header("authorization"),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let (status, extra) = api.answers.lock().unwrap().pop_front().unwrap_or((200, vec![]));
    let mut response = (StatusCode::from_u16(status).unwrap(), "{\"detail\":\"as told\"}").into_response();
    for (name, value) in extra {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}

async fn start_api() -> (Api, String) {
    let api = Api::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(record).with_state(api.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (api, url)
}

fn spec(url: &str, destination: &str, mode: &str) -> Result<ebb_shared::config::SyncSpec, String> {
    std::env::set_var("EBB_TEST_HTTP_REQUEST_TOKEN", "s3cret-api-token");
    let text = format!(
        "sources:\n  files: {{ type: csv, path: . }}\n\
         models:\n  people: {{ source: files, file: p.csv, primary_key: id }}\n\
         destinations:\n  api:\n    type: http_request\n    base_url: {url}\n    headers: {{ Authorization: \"Bearer ${{EBB_TEST_HTTP_REQUEST_TOKEN}}\" }}\n{destination}\
         syncs:\n  s:\n    model: people\n    destination: api\n    mode: {mode}\n"
    );
    let config = crate::config::from_yaml_str(std::path::Path::new("t.yaml"), &text, std::path::Path::new("."))
        .map_err(|e| e.to_string())?;
    Ok(config.sync_spec("s").unwrap())
}

async fn open(url: &str, destination: &str, mode: &str) -> Arc<dyn Destination> {
    build(&spec(url, destination, mode).unwrap_or_else(|e| panic!("{e}")))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

const PER_ROW: &str = concat!(
    "    on_added: { method: POST, url: /contacts, body: '{\"email\": {{ record.email | json }}, \"source\": \"ebb\"}' }\n",
    "    on_changed: { method: PATCH, url: '/contacts/{{ key }}', body: '{\"email\": {{ record.email | json }}, \"was\": {{ previous.email | json }}}' }\n",
    "    on_removed: { method: DELETE, url: '/contacts/{{ key }}?reason={{ action }}', body: '' }\n",
);

#[tokio::test]
async fn each_operation_renders_its_own_request() {
    let (api, url) = start_api().await;
    let dest = open(&url, PER_ROW, "mirror").await;
    let added = r#"{"email":"ada@x.com"}"#;
    let changed = r#"{"email":"new@x.com"}"#;
    let records = [
        Record::new("1", added),
        Record {
            key: "2",
            json: changed,
            previous: Some(r#"{"email":"old@x.com"}"#),
        },
    ];
    assert_eq!(dest.send(Action::Upsert, &records).await.unwrap(), vec![Ok(()), Ok(())]);
    assert_eq!(
        dest.send(Action::Delete, &[Record::new("3", "{}")]).await.unwrap(),
        vec![Ok(())]
    );
    let seen = api.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    assert_eq!((seen[0].method.as_str(), seen[0].path.as_str()), ("POST", "/contacts"));
    assert_eq!(seen[0].body, r#"{"email": "ada@x.com", "source": "ebb"}"#);
    assert_eq!(seen[0].content_type, "application/json");
    assert_eq!(seen[0].authorization, "Bearer s3cret-api-token");
    assert_eq!(
        (seen[1].method.as_str(), seen[1].path.as_str()),
        ("PATCH", "/contacts/2")
    );
    assert_eq!(seen[1].body, r#"{"email": "new@x.com", "was": "old@x.com"}"#);
    assert_eq!(
        (seen[2].method.as_str(), seen[2].path.as_str()),
        ("DELETE", "/contacts/3?reason=delete")
    );
    assert_eq!(seen[2].body, "");
}

#[tokio::test]
async fn batched_operations_send_one_request_per_batch_and_forms_work() {
    let (api, url) = start_api().await;
    let batched = "    batch_size: 50\n    on_added: { url: /bulk, batched: true, body: '{\"users\": [{% for r in records %}{\"email\": {{ r.email | json }}, \"id\": {{ keys[forloop.index0] | json }}}{% unless forloop.last %}, {% endunless %}{% endfor %}]}' }\n";
    let dest = open(&url, batched, "insert").await;
    let rows: Vec<String> = (0..3).map(|i| format!(r#"{{"email":"p{i}@x.com"}}"#)).collect();
    let keys: Vec<String> = (0..3).map(|i| i.to_string()).collect();
    let records: Vec<Record<'_>> = rows
        .iter()
        .zip(&keys)
        .map(|(json, key)| Record::new(key, json))
        .collect();
    assert_eq!(dest.send(Action::Insert, &records).await.unwrap(), vec![Ok(()); 3]);
    let seen = api.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let body: serde_json::Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(body["users"][2], serde_json::json!({"email": "p2@x.com", "id": "2"}));
    let (api, url) = start_api().await;
    let form = "    body_format: form\n    on_added: { url: /subscribe, body: 'email={{ record.email | url_encode }}&list=weekly' }\n";
    let dest = open(&url, form, "insert").await;
    dest.send(Action::Insert, &[Record::new("1", r#"{"email":"a+b@x.com"}"#)])
        .await
        .unwrap();
    let seen = api.seen.lock().unwrap().clone();
    assert_eq!(seen[0].content_type, "application/x-www-form-urlencoded");
    assert_eq!(seen[0].body, "email=a%2Bb%40x.com&list=weekly");
}

#[tokio::test]
async fn answers_are_classified_and_a_bad_render_fails_its_row_alone() {
    let (api, url) = start_api().await;
    let dest = open(&url, PER_ROW, "mirror").await;
    let row = [Record::new("1", r#"{"email":"a@x.com"}"#)];
    api.answers.lock().unwrap().extend([
        (503, vec![]),
        (429, vec![("retry-after", "7")]),
        (404, vec![]),
        (401, vec![]),
    ]);
    assert!(matches!(
        dest.send(Action::Insert, &row).await,
        Err(DeliveryError::Transient(_))
    ));
    assert_eq!(
        dest.send(Action::Insert, &row).await.unwrap_err(),
        DeliveryError::RateLimited {
            retry_after: Some(std::time::Duration::from_secs(7))
        }
    );
    let refused = dest.send(Action::Insert, &row).await.unwrap();
    assert!(refused[0].as_ref().unwrap_err().contains("404"), "{refused:?}");
    let denied = dest.send(Action::Insert, &row).await.unwrap_err();
    assert!(
        matches!(&denied, DeliveryError::Permanent(m) if m.contains("401") && !m.contains("s3cret")),
        "{denied:?}"
    );
    // A value that breaks the body template's JSON fails its row, not the batch.
    let broken = "    on_added: { url: /x, body: '{\"n\": {{ record.n }}}' }\n";
    let dest = open(&url, broken, "insert").await;
    let results = dest
        .send(Action::Insert, &[Record::new("1", r#"{"n":"not a number"}"#)])
        .await
        .unwrap();
    assert!(results[0].as_ref().unwrap_err().contains("invalid JSON"), "{results:?}");
}

#[tokio::test]
async fn configs_that_cannot_work_are_refused_before_a_run() {
    let (_, url) = start_api().await;
    let error = spec(&url, "    batch_size: 10\n    on_added: { url: /x }\n", "insert").unwrap_err();
    assert!(error.contains("batched: true"), "{error}");
    let error = spec(&url, "    on_added: { method: FETCH, url: /x }\n", "insert").unwrap_err();
    assert!(error.contains("on_added.method"), "{error}");
    let error = spec(&url, "    on_added: { url: /x, body: '{{ record.email ' }\n", "insert").unwrap_err();
    assert!(error.contains("on_added.body"), "{error}");
    let error = spec(&url, "    retry_on: [700]\n    on_added: { url: /x }\n", "insert").unwrap_err();
    assert!(error.contains("700"), "{error}");
    let mirror = spec(&url, "    on_added: { url: /x }\n", "mirror").unwrap();
    let error = build(&mirror).await.err().expect("refused").to_string();
    assert!(error.contains("on_removed"), "{error}");
    let text = "destinations:\n  api:\n    type: http_request\n    on_added: { url: /relative }\n";
    let error = crate::config::from_yaml_str(std::path::Path::new("t.yaml"), text, std::path::Path::new("."))
        .unwrap_err()
        .to_string();
    assert!(error.contains("base_url"), "{error}");
}
