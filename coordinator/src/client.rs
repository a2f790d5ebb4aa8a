//! What the CLI talks to: an embedded runtime in this process, or a coordinator's
//! REST API. Both answer with the API's own shapes.

use crate::api::views::{List, RowsPage, RunRowView, RunView, SyncView, TriggerAnswer, TriggerBody};
use crate::run::rows::{RowFilter, RowsFormat};
use crate::run::TriggerOptions;
use crate::runtime::Runtime;
use anyhow::{anyhow, bail, Context};
use ebb_shared::protocol::RowResult;

pub enum Backend {
    Embedded(Runtime),
    Remote {
        base_url: String,
        token: Option<String>,
        client: reqwest::Client,
    },
}

impl Backend {
    pub fn remote(base_url: &str, token: Option<String>) -> Backend {
        Backend::Remote {
            base_url: base_url.trim_end_matches('/').to_string(),
            token,
            client: reqwest::Client::new(),
        }
    }

    async fn get<T: for<'de> serde::Deserialize<'de>>(&self, path: &str) -> anyhow::Result<T> {
        self.call(reqwest::Method::GET, path, None::<&()>).await
    }

    /// One request to the coordinator's API, answered in the API's shapes.
    async fn call<T: for<'de> serde::Deserialize<'de>>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&impl serde::Serialize>,
    ) -> anyhow::Result<T> {
        let Backend::Remote {
            base_url,
            token,
            client,
        } = self
        else {
            unreachable!("remote only")
        };
        let mut request = client.request(method, format!("{base_url}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the coordinator at {base_url} (is it running? see --api-url)"))?;
        answer(response).await
    }

    pub async fn trigger(&self, sync: &str, body: TriggerBody) -> anyhow::Result<String> {
        match self {
            Backend::Embedded(runtime) => {
                let coordinator = runtime.coordinator.as_ref().expect("embedded runs a coordinator");
                let options = TriggerOptions {
                    full_resync: body.full_resync,
                    reset_cdc: body.reset_cdc,
                    schedule_tick: None,
                    trigger: "manual".into(),
                };
                Ok(coordinator.trigger(sync, options).await?.id)
            }
            Backend::Remote { .. } => {
                let path = format!("/api/v1/syncs/{sync}/trigger");
                Ok(self
                    .call::<TriggerAnswer>(reqwest::Method::POST, &path, Some(&body))
                    .await?
                    .id)
            }
        }
    }

    pub async fn run(&self, run_id: &str) -> anyhow::Result<RunView> {
        match self {
            Backend::Embedded(runtime) => {
                let coordinator = runtime.coordinator.as_ref().expect("embedded runs a coordinator");
                let run = coordinator
                    .store()
                    .run(run_id)
                    .await?
                    .ok_or_else(|| anyhow!("no run {run_id:?}"))?;
                Ok(RunView::new(&run, coordinator.rows_done(run_id)))
            }
            Backend::Remote { .. } => self.get(&format!("/api/v1/runs/{run_id}")).await,
        }
    }

    pub async fn runs(&self, sync: &str, limit: i64) -> anyhow::Result<Vec<RunView>> {
        match self {
            Backend::Embedded(runtime) => {
                let coordinator = runtime.coordinator.as_ref().expect("embedded runs a coordinator");
                if !coordinator.config().syncs.contains_key(sync) {
                    bail!("no sync named {sync:?}");
                }
                let runs = coordinator.store().runs(sync, limit, 0).await?;
                Ok(runs.iter().map(|r| RunView::new(r, 0)).collect())
            }
            Backend::Remote { .. } => Ok(self
                .get::<List<RunView>>(&format!("/api/v1/syncs/{sync}/runs?limit={limit}"))
                .await?
                .data),
        }
    }

    /// The live debugger's batch attempts of a run that pass `filter`.
    pub async fn requests(
        &self,
        run_id: &str,
        filter: crate::run::requests::RequestFilter,
    ) -> anyhow::Result<crate::api::views::RequestsPage> {
        match self {
            Backend::Embedded(runtime) => {
                let coordinator = runtime.coordinator.as_ref().expect("embedded runs a coordinator");
                let (data, has_more) = coordinator.requests(run_id, &filter).await?;
                Ok(crate::api::views::RequestsPage { data, has_more })
            }
            Backend::Remote { .. } => {
                let mut url = reqwest::Url::parse("http://x/").expect("a URL");
                {
                    let mut query = url.query_pairs_mut();
                    if let Some(key) = &filter.key {
                        query.append_pair("key", key);
                    }
                    query.append_pair("failed", &filter.failed.to_string());
                    query.append_pair("limit", &filter.limit.to_string());
                }
                let query = url.query().unwrap_or_default().to_string();
                self.get(&format!("/api/v1/runs/{run_id}/requests?{query}")).await
            }
        }
    }

    /// Writes the rows of a run that pass `filter` to `out` in `format`
    /// (every row for jsonl and csv unless `filter.limit` says less), as they
    /// arrive; returns how many.
    pub async fn write_rows(
        &self,
        run_id: &str,
        filter: RowFilter,
        format: RowsFormat,
        out: &mut (dyn std::io::Write + Send),
    ) -> anyhow::Result<u64> {
        match self {
            Backend::Embedded(runtime) => {
                let coordinator = runtime.coordinator.as_ref().expect("embedded runs a coordinator");
                if coordinator.store().run(run_id).await?.is_none() {
                    bail!("no run {run_id:?}");
                }
                let mut rows = coordinator.rows(run_id, filter).await?;
                out.write_all(format.header().as_bytes())?;
                let mut written = 0;
                while let Some(row) = rows.recv().await {
                    out.write_all(format.line(&row?).as_bytes())?;
                    written += 1;
                }
                Ok(written)
            }
            Backend::Remote {
                base_url,
                token,
                client,
            } => {
                let format_name = match format {
                    RowsFormat::Json => "json",
                    RowsFormat::Jsonl => "jsonl",
                    RowsFormat::Csv => "csv",
                };
                let mut path = format!("{base_url}/api/v1/runs/{run_id}/rows?format={format_name}");
                if let Some(outcome) = filter.outcome {
                    path.push_str(&format!("&outcome={}", outcome.as_str()));
                }
                if let Some(key) = &filter.key {
                    path.push_str(&format!("&key={}", url_encode(key)));
                }
                if let Some(limit) = filter.limit {
                    path.push_str(&format!("&limit={limit}"));
                }
                let mut request = client.get(path);
                if let Some(token) = token {
                    request = request.bearer_auth(token);
                }
                let mut response = request
                    .send()
                    .await
                    .with_context(|| format!("cannot reach the coordinator at {base_url}"))?;
                if !response.status().is_success() {
                    return answer::<serde_json::Value>(response).await.map(|_| 0);
                }
                let mut written = 0;
                while let Some(chunk) = response.chunk().await? {
                    written += chunk.iter().filter(|b| **b == b'\n').count() as u64;
                    out.write_all(&chunk)?;
                }
                Ok(written.saturating_sub(u64::from(format == RowsFormat::Csv)))
            }
        }
    }

    /// The first `shown` rows of a run that pass `filter`, and how many pass in
    /// all: the rest stream past and are counted, never held.
    pub async fn rows_page(&self, run_id: &str, filter: RowFilter, shown: u64) -> anyhow::Result<RowsPage> {
        let mut page = PageWriter {
            shown,
            pending: Vec::new(),
            kept: Vec::new(),
            total: 0,
            error: None,
        };
        let filter = RowFilter { limit: None, ..filter };
        self.write_rows(run_id, filter, RowsFormat::Jsonl, &mut page).await?;
        std::io::Write::flush(&mut page)?;
        if let Some(error) = page.error {
            return Err(error.into());
        }
        Ok(RowsPage {
            has_more: page.total > page.kept.len() as u64,
            data: page.kept,
            total: page.total,
        })
    }

    /// The syncs a coordinator runs.
    pub async fn syncs(&self) -> anyhow::Result<Vec<SyncView>> {
        Ok(self.get::<List<SyncView>>("/api/v1/syncs").await?.data)
    }

    /// Cancels a run; answers the run as it is then.
    pub async fn cancel(&self, run_id: &str) -> anyhow::Result<RunView> {
        match self {
            Backend::Embedded(runtime) => {
                let coordinator = runtime.coordinator.as_ref().expect("embedded runs a coordinator");
                let run = coordinator
                    .cancel(run_id)
                    .await?
                    .ok_or_else(|| anyhow!("no run {run_id:?}"))?;
                Ok(RunView::new(&run, 0))
            }
            Backend::Remote { .. } => {
                let path = format!("/api/v1/runs/{run_id}/cancel");
                self.call(reqwest::Method::POST, &path, None::<&()>).await
            }
        }
    }

    pub async fn close(self) {
        if let Backend::Embedded(runtime) = self {
            runtime.shutdown(std::time::Duration::from_secs(10)).await;
        }
    }
}

/// Keeps the first rows of a JSON-lines stream and counts the others.
struct PageWriter {
    shown: u64,
    pending: Vec<u8>,
    kept: Vec<RunRowView>,
    total: u64,
    error: Option<serde_json::Error>,
}

impl PageWriter {
    fn take_lines(&mut self) {
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            if line.len() <= 1 {
                continue;
            }
            if (self.kept.len() as u64) < self.shown {
                match serde_json::from_slice::<RowResult>(&line) {
                    Ok(row) => self.kept.push(RunRowView::from(row)),
                    Err(error) => {
                        self.error.get_or_insert(error);
                    }
                }
            }
            self.total += 1;
        }
    }
}

impl std::io::Write for PageWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(bytes);
        self.take_lines();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.pending.is_empty() && !self.pending.ends_with(b"\n") {
            self.pending.push(b'\n');
        }
        self.take_lines();
        Ok(())
    }
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

async fn answer<T: for<'de> serde::Deserialize<'de>>(response: reqwest::Response) -> anyhow::Result<T> {
    let status = response.status();
    if status.is_success() {
        return Ok(response.json().await?);
    }
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    let message = body["error"].as_str().unwrap_or("no detail");
    bail!("coordinator answered {status}: {message}")
}
