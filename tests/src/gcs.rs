//! `fake-gcs-server` (its PyPI wheel bundles the Go program): Google Cloud
//! Storage's JSON and XML APIs in memory, installed and started as `venv.rs`
//! says. Files sources read it over the XML API as they read a real bucket
//! (list, metadata, ranged reads); the tests put objects through the JSON
//! API's media upload, the one upload the emulator serves unsigned.

pub struct FakeGcs {
    /// `http://127.0.0.1:PORT`: the XML API's public host, and the JSON API.
    pub url: String,
    bucket: String,
    http: reqwest::Client,
    _process: tokio::process::Child,
}

impl FakeGcs {
    /// A server with one empty bucket.
    pub async fn start(bucket: &str) -> FakeGcs {
        let binary = crate::venv::program("fake-gcs-server", "EBB_FAKE_GCS_SERVER");
        let port = crate::source_contract::closed_address().port();
        let host = format!("127.0.0.1:{port}");
        let args = [
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-port",
            &port.to_string(),
            "-backend",
            "memory",
            "-log-level",
            "error",
            // XML API requests are served when their Host is this.
            "-public-host",
            &host,
        ]
        .map(String::from);
        let process = crate::venv::start_listening(&binary, &args, port).await;
        let server = FakeGcs {
            url: format!("http://{host}"),
            bucket: bucket.to_string(),
            http: reqwest::Client::new(),
            _process: process,
        };
        let answer = server
            .http
            .post(format!("{}/storage/v1/b?project=ebb-tests", server.url))
            .json(&serde_json::json!({"name": bucket}))
            .send()
            .await
            .expect("fake-gcs-server answers");
        assert!(
            answer.status().is_success(),
            "creating bucket {bucket}: {}",
            answer.status()
        );
        server
    }

    /// A files source's URL for the objects below `prefix`.
    pub fn source_url(&self, prefix: &str) -> String {
        format!("gs://{}/{prefix}?endpoint={}", self.bucket, self.url)
    }

    /// Uploads one object (`name` is its full name in the bucket).
    pub async fn put(&self, name: &str, bytes: Vec<u8>) {
        let answer = self
            .http
            .post(format!("{}/upload/storage/v1/b/{}/o", self.url, self.bucket))
            .query(&[("uploadType", "media"), ("name", name)])
            .header("content-type", "application/octet-stream")
            .body(bytes)
            .send()
            .await
            .expect("fake-gcs-server answers");
        assert!(answer.status().is_success(), "uploading {name}: {}", answer.status());
    }
}
