//! The Meta Custom Audiences connector against the loopback Marketing API of
//! `fake.rs`: members added and removed with normalised, hashed identifiers,
//! members added elsewhere left alone, throttling and server errors
//! classified, a late answer harmless, secrets kept out of errors.

use super::fake::{FakeMeta, Fault, Member};
use crate::behaviour::Action;
use crate::destinations::contract::send;
use crate::destinations::{build, DeliveryError, Destination, REGISTRY};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::sync::Arc;

const TOKEN: &str = "EAAB-ebb-test-system-user-token";
const AUDIENCE: &str = "23850000000000001";

fn sha(text: &str) -> String {
    super::request::hex(&Sha256::digest(text.as_bytes()))
}

fn spec(fake: &FakeMeta, token: &str, mappings: &str, timeout: &str) -> ebb_shared::config::SyncSpec {
    let variable = format!("EBB_TEST_META_{}_{}", token.len(), fake.url.rsplit(':').next().unwrap());
    std::env::set_var(&variable, token);
    let text = format!(
        "sources:\n  files: {{ type: csv, path: . }}\n\
         models:\n  people: {{ source: files, file: p.csv, primary_key: id }}\n\
         destinations:\n  ads:\n    type: meta_custom_audience\n    access_token: \"${{{variable}}}\"\n    audience_id: \"{AUDIENCE}\"\n    api_base_url: {}\n    timeout: {timeout}\n\
         syncs:\n  s:\n    model: people\n    destination: ads\n    type: audience\n    mode: add_remove\n    mappings:\n{mappings}",
        fake.url
    );
    let config = crate::config::from_yaml_str(std::path::Path::new("t.yaml"), &text, std::path::Path::new("."))
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    config.sync_spec("s").unwrap()
}

const MAPPINGS: &str =
    "      - { from: email, to: EMAIL }\n      - { from: phone, to: PHONE }\n      - { from: first_name, to: FN }\n";

async fn open(fake: &FakeMeta, timeout: &str) -> Arc<dyn Destination> {
    build(&spec(fake, TOKEN, MAPPINGS, timeout))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

fn member(pairs: &[(&str, &str)]) -> Member {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[tokio::test]
async fn members_are_added_and_removed_by_hashed_normalised_identifiers() {
    let fake = FakeMeta::start(TOKEN).await;
    fake.create_audience(AUDIENCE);
    let someone_else = member(&[("EMAIL", &sha("kept@x.com"))]);
    fake.add_member(AUDIENCE, someone_else.clone());
    let ads = open(&fake, "5s").await;
    let rows = [
        json!({"EMAIL": " Ada@Example.COM ", "PHONE": "+1 (650) 555-1212", "FN": "Ada"}),
        json!({"EMAIL": "bo@x.com", "PHONE": null, "FN": null}),
        json!({"EMAIL": "", "PHONE": null, "FN": " "}),
    ];
    let results = send(ads.as_ref(), Action::Add, &rows).await.unwrap();
    assert_eq!(&results[..2], &[Ok(()), Ok(())]);
    assert!(
        results[2].as_ref().unwrap_err().contains("no identifier"),
        "{results:?}"
    );
    let ada = member(&[
        ("EMAIL", &sha("ada@example.com")),
        ("PHONE", &sha("16505551212")),
        ("FN", &sha("ada")),
    ]);
    let bo = member(&[("EMAIL", &sha("bo@x.com"))]);
    assert_eq!(
        fake.members(AUDIENCE),
        [ada.clone(), bo.clone(), someone_else.clone()].into_iter().collect()
    );
    // A batch sent on its own is a session of its own, ended.
    let sessions = fake.sessions();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!((sessions[0].batches.clone(), sessions[0].ended), (vec![1], true));
    // Removing sends the same identifiers: only what Ebb added leaves.
    assert_eq!(
        send(ads.as_ref(), Action::Remove, &rows[1..2]).await.unwrap(),
        vec![Ok(())]
    );
    assert_eq!(fake.members(AUDIENCE), [ada, someone_else].into_iter().collect());
}

#[tokio::test]
async fn throttling_server_errors_and_late_answers_are_retriable_and_harmless() {
    let fake = FakeMeta::start(TOKEN).await;
    fake.create_audience(AUDIENCE);
    let ads = open(&fake, "300ms").await;
    let row = [json!({"EMAIL": "a@x.com"})];
    fake.fault(Fault::RateLimited, 1);
    let throttled = send(ads.as_ref(), Action::Add, &row).await;
    assert!(
        matches!(throttled, Err(DeliveryError::RateLimited { .. })),
        "{throttled:?}"
    );
    fake.fault(Fault::Unavailable, 1);
    let unavailable = send(ads.as_ref(), Action::Add, &row).await;
    assert!(
        matches!(unavailable, Err(DeliveryError::Transient(_))),
        "{unavailable:?}"
    );
    fake.fault(Fault::AppliedThenSlow(std::time::Duration::from_secs(2)), 1);
    let late = send(ads.as_ref(), Action::Add, &row).await.unwrap_err();
    assert!(
        matches!(&late, DeliveryError::Transient(m) if m.contains("timed out") && !m.contains(TOKEN)),
        "{late:?}"
    );
    assert_eq!(send(ads.as_ref(), Action::Add, &row).await.unwrap(), vec![Ok(())]);
    assert_eq!(fake.members(AUDIENCE).len(), 1, "adding a member twice keeps one");
}

#[tokio::test]
async fn a_bad_token_and_an_unknown_audience_are_permanent_and_named() {
    let fake = FakeMeta::start("EAAB-the-right-token").await;
    fake.create_audience(AUDIENCE);
    let ads = build(&spec(&fake, TOKEN, MAPPINGS, "5s")).await.unwrap();
    let error = send(ads.as_ref(), Action::Add, &[json!({"EMAIL": "a@x.com"})])
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(
        matches!(error, DeliveryError::Permanent(_)) && text.contains("190"),
        "{text}"
    );
    assert!(!text.contains(TOKEN), "{text}");
    let fake = FakeMeta::start(TOKEN).await;
    let unknown = spec(&fake, TOKEN, MAPPINGS, "5s");
    let error = REGISTRY.test_connection("ads", &unknown.destination).await.unwrap_err();
    assert!(error.contains("audience_id"), "{error}");
    fake.create_audience(AUDIENCE);
    REGISTRY.test_connection("ads", &unknown.destination).await.unwrap();
}

#[tokio::test]
async fn mappings_must_name_identifier_keys() {
    let fake = FakeMeta::start(TOKEN).await;
    let wrong = spec(&fake, TOKEN, "      - { from: email, to: email_address }\n", "5s");
    let error = build(&wrong).await.err().expect("refused").to_string();
    assert!(error.contains("email_address") && error.contains("EMAIL"), "{error}");
    let load = |settings: &str| {
        let text = format!("destinations:\n  ads:\n    type: meta_custom_audience\n    access_token: x\n{settings}");
        crate::config::from_yaml_str(std::path::Path::new("t.yaml"), &text, std::path::Path::new("."))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let error = load("    audience_id: \"123\"\n    batch_size: 10001\n");
    assert!(error.contains("10000"), "{error}");
    let error = load("    audience_id: my-audience\n");
    assert!(error.contains("numeric"), "{error}");
}

#[test]
fn the_app_secret_proof_is_the_hmac_of_the_token_keyed_by_the_secret() {
    std::env::set_var(
        "EBB_TEST_META_PROOF_TOKEN",
        "The quick brown fox jumps over the lazy dog",
    );
    std::env::set_var("EBB_TEST_META_PROOF_SECRET", "key");
    let config: super::MetaConfig = serde_yaml::from_str(
        "access_token: \"${EBB_TEST_META_PROOF_TOKEN}\"\naudience_id: \"1\"\napp_secret: \"${EBB_TEST_META_PROOF_SECRET}\"\n",
    )
    .unwrap();
    let client = super::Client::new(&config, "ads").unwrap();
    // HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog").
    assert_eq!(
        client.proof.as_deref(),
        Some("f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8")
    );
    assert!(client.secrets.contains(&"key".to_string()));
}

#[tokio::test]
async fn a_member_whose_identifiers_changed_leaves_before_the_new_one_joins() {
    use crate::destinations::Record;
    let fake = FakeMeta::start(TOKEN).await;
    fake.create_audience(AUDIENCE);
    let ads = open(&fake, "5s").await;
    let old = r#"{"EMAIL":"old@x.com","PHONE":null,"FN":"Ada"}"#;
    send(ads.as_ref(), Action::Add, &[serde_json::from_str(old).unwrap()])
        .await
        .unwrap();
    let new = r#"{"EMAIL":"new@x.com","PHONE":null,"FN":"Ada"}"#;
    let same = r#"{"EMAIL":"same@x.com","PHONE":null,"FN":null}"#;
    send(ads.as_ref(), Action::Add, &[serde_json::from_str(same).unwrap()])
        .await
        .unwrap();
    let records = [
        Record {
            key: "1",
            json: new,
            previous: Some(old),
        },
        // Changed in a field that is no identifier: nothing to take back.
        Record {
            key: "2",
            json: same,
            previous: Some(same),
        },
    ];
    assert_eq!(ads.send(Action::Add, &records).await.unwrap(), vec![Ok(()), Ok(())]);
    let members = fake.members(AUDIENCE);
    let emails: BTreeSet<String> = members.iter().map(|m| m["EMAIL"].clone()).collect();
    assert_eq!(emails, [sha("new@x.com"), sha("same@x.com")].into_iter().collect());
}

/// What the engine does for a sequenced destination: the first batch alone,
/// the middle ones at once, the last after them (delivery.rs).
async fn send_sequence(ads: &dyn Destination, sequence: usize, batches: &[Vec<serde_json::Value>]) {
    use crate::destinations::{Record, SequencePlace};
    let texts: Vec<Vec<String>> = batches
        .iter()
        .map(|rows| rows.iter().map(|row| row.to_string()).collect())
        .collect();
    let keys: Vec<String> = (0..batches.iter().map(Vec::len).sum::<usize>())
        .map(|i| i.to_string())
        .collect();
    let rows = keys.len();
    let records: Vec<Vec<Record<'_>>> = texts
        .iter()
        .enumerate()
        .map(|(b, batch)| batch.iter().map(|json| Record::new(&keys[b], json)).collect())
        .collect();
    let send = |index: usize| {
        let place = SequencePlace {
            sequence,
            last: index + 1 == records.len(),
            rows,
        };
        let batch = &records[index];
        async move {
            // Retried as the engine would: throttling and outages pass.
            for _ in 0..10 {
                match ads.send_in_sequence(Action::Add, batch, place).await {
                    Ok(results) => return assert!(results.iter().all(Result::is_ok), "{results:?}"),
                    Err(DeliveryError::RateLimited { .. } | DeliveryError::Transient(_)) => continue,
                    Err(error) => panic!("{error}"),
                }
            }
            panic!("batch {index} never went through");
        }
    };
    send(0).await;
    futures::future::join_all((1..records.len() - 1).map(send)).await;
    send(records.len() - 1).await;
}

fn emails(from: usize, count: usize) -> Vec<serde_json::Value> {
    (from..from + count)
        .map(|i| json!({"EMAIL": format!("p{i}@x.com"), "PHONE": null, "FN": null}))
        .collect()
}

#[tokio::test]
async fn an_actions_batches_form_one_upload_session_ended_by_the_last() {
    let fake = FakeMeta::start(TOKEN).await;
    fake.create_audience(AUDIENCE);
    let ads = open(&fake, "5s").await;
    assert!(ads.sequenced());
    let batches: Vec<_> = (0..5).map(|b| emails(b * 3, 3)).collect();
    send_sequence(ads.as_ref(), 0, &batches).await;
    let sessions = fake.sessions();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let session = &sessions[0];
    let mut numbers = session.batches.clone();
    assert_eq!(
        (numbers[0], *numbers.last().unwrap()),
        (1, 5),
        "first and last go alone: {session:?}"
    );
    numbers.sort_unstable();
    assert_eq!(numbers, vec![1, 2, 3, 4, 5]);
    assert!(session.ended, "{session:?}");
    assert_eq!((session.rows, session.estimated_total), (15, 15));
    assert_eq!(fake.members(AUDIENCE).len(), 15);
    // Another sequence of the attempt (say, its removals) is another session.
    send_sequence(ads.as_ref(), 1, &[emails(100, 2), emails(102, 2)]).await;
    assert_eq!(fake.sessions().len(), 2);
    assert_eq!(fake.out_of_step(), 0);
}

#[tokio::test]
async fn a_session_whose_ends_failed_goes_on_in_a_new_one() {
    let fake = FakeMeta::start(TOKEN).await;
    fake.create_audience(AUDIENCE);
    let ads = open(&fake, "300ms").await;
    // The opening request meets an outage: nothing of the session reached
    // Meta, and the next request opens a session with batch_seq 1.
    fake.fault(Fault::Unavailable, 1);
    send_sequence(ads.as_ref(), 0, &[emails(0, 2), emails(2, 2), emails(4, 2)]).await;
    // The last request is applied but answered too late: it may have ended
    // the session, so its retry is a session of its own.
    let fresh = open(&fake, "300ms").await;
    let before = fake.sessions().len();
    let batches = [emails(10, 2), emails(12, 2), emails(14, 2)];
    {
        use crate::destinations::{Record, SequencePlace};
        let texts: Vec<Vec<String>> = batches
            .iter()
            .map(|b| b.iter().map(|r| r.to_string()).collect())
            .collect();
        let records: Vec<Vec<Record<'_>>> = texts
            .iter()
            .map(|b| b.iter().map(|j| Record::new("k", j)).collect())
            .collect();
        let place = |last| SequencePlace {
            sequence: 0,
            last,
            rows: 6,
        };
        fresh
            .send_in_sequence(Action::Add, &records[0], place(false))
            .await
            .unwrap();
        fresh
            .send_in_sequence(Action::Add, &records[1], place(false))
            .await
            .unwrap();
        fake.fault(Fault::AppliedThenSlow(std::time::Duration::from_secs(2)), 1);
        let late = fresh.send_in_sequence(Action::Add, &records[2], place(true)).await;
        assert!(matches!(late, Err(DeliveryError::Transient(_))), "{late:?}");
        fresh
            .send_in_sequence(Action::Add, &records[2], place(true))
            .await
            .unwrap();
    }
    let sessions = fake.sessions();
    assert_eq!(fake.out_of_step(), 0, "{sessions:?}");
    let ended: Vec<Vec<u64>> = sessions[before..].iter().map(|s| s.batches.clone()).collect();
    assert_eq!(
        ended,
        vec![vec![1, 2, 3], vec![1]],
        "the retry opened and ended its own: {sessions:?}"
    );
    assert!(sessions.iter().all(|s| s.batches[0] == 1), "{sessions:?}");
    assert_eq!(fake.members(AUDIENCE).len(), 12);
}
