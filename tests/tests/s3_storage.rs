//! Ebb's object store over the S3 protocol, against a real S3 server on
//! loopback: objects round-trip, list, and are immutable (`If-None-Match: *`).

use ebb_shared::storage::{Storage, StorageError};
use ebb_tests::s3::S3Server;
use std::sync::Mutex;

/// The credentials reach `Storage` through the process environment, which the
/// tests of this binary share: one of them at a time sets it and builds.
static ENVIRONMENT: Mutex<()> = Mutex::new(());

fn storage_for(server: &S3Server, secret_key: &str) -> Storage {
    let _guard = ENVIRONMENT.lock().unwrap_or_else(|e| e.into_inner());
    std::env::set_var("AWS_ACCESS_KEY_ID", server.access_key());
    std::env::set_var("AWS_SECRET_ACCESS_KEY", secret_key);
    Storage::from_url(&server.store_url("ebb")).unwrap()
}

#[tokio::test]
async fn objects_round_trip_list_and_are_never_overwritten() {
    let server = S3Server::start("ebb-test").await.unwrap();
    assert!(server.endpoint().starts_with("http://127.0.0.1:"));
    let storage = storage_for(&server, server.secret_key());

    storage.create("syncs/s/a.ebb", b"first".to_vec()).await.unwrap();
    assert_eq!(&storage.get("syncs/s/a.ebb").await.unwrap()[..], b"first");
    assert_eq!(
        storage.list("syncs/s").await.unwrap(),
        vec!["syncs/s/a.ebb".to_string()]
    );

    let again = storage.create("syncs/s/a.ebb", b"second".to_vec()).await.unwrap_err();
    assert!(matches!(again, StorageError::AlreadyExists { .. }), "{again}");
    assert_eq!(
        &storage.get("syncs/s/a.ebb").await.unwrap()[..],
        b"first",
        "the first object stands"
    );

    // Ranged reads: a shard reads a snapshot's first bytes whatever its size
    // (a range past the end gives what there is), then its buckets' bytes.
    storage.create("syncs/s/b.ebb", b"0123456789".to_vec()).await.unwrap();
    assert_eq!(
        &storage.get_range("syncs/s/b.ebb", 0..16 * 1024).await.unwrap()[..],
        b"0123456789"
    );
    assert_eq!(&storage.get_range("syncs/s/b.ebb", 3..7).await.unwrap()[..], b"3456");
    storage.delete("syncs/s/b.ebb").await.unwrap();

    let missing = storage.get("syncs/s/missing").await.unwrap_err();
    assert!(matches!(missing, StorageError::NotFound { .. }), "{missing}");
    storage.delete("syncs/s/a.ebb").await.unwrap();
    assert!(storage.list("syncs/s").await.unwrap().is_empty());

    let forged = storage_for(&server, "not-the-secret");
    let refused = forged.get("syncs/s/a.ebb").await.unwrap_err();
    assert!(
        matches!(refused, StorageError::Io(_)),
        "the server checks signatures: {refused}"
    );
}

#[test]
fn a_server_on_its_own_thread_outlives_test_runtimes() {
    let server = S3Server::start_blocking_thread("ebb-test").unwrap();
    let storage = storage_for(&server, server.secret_key());
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    runtime().block_on(storage.create("k/one", b"1".to_vec())).unwrap();
    // A second runtime, after the first is gone: the server still answers.
    let listed = runtime().block_on(storage.list("k")).unwrap();
    assert_eq!(listed, vec!["k/one".to_string()]);
    drop(server);
}
