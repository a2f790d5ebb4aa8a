//! Bulk API 2.0 ingest jobs, for shards too large for sObject Collections'
//! 200 records a request: create a job, record its id (so an attempt that
//! takes over after a crash resumes it), upload the rows as CSV, mark the
//! upload complete, poll the job's state, then read its successful and
//! failed results back onto the rows.
//!
//! Salesforce does not keep the upload's order in its results, so a result
//! finds its row by the row's own cells, which every result repeats.

use super::client::Client;
use crate::destinations::DeliveryError;
use crate::jobs::JobLog;
use reqwest::Method;
use serde_json::{json, Map, Value};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// A cell that sets a field to null (an empty cell leaves it as it is).
const NULL_CELL: &str = "#N/A";
/// The longest wait between two polls of a job.
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(30);

/// What a job does with its rows.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Operation {
    Insert,
    /// Upsert by this External ID field.
    Upsert(String),
    /// Rows carry their record's `Id`.
    Update,
    Delete,
}

impl Operation {
    fn name(&self) -> &'static str {
        match self {
            Operation::Insert => "insert",
            Operation::Upsert(_) => "upsert",
            Operation::Update => "update",
            Operation::Delete => "delete",
        }
    }
}

/// How jobs are waited for.
#[derive(Debug, Clone, Copy)]
pub(super) struct Polling {
    /// The first wait; each later one is half again as long, up to 30 s.
    pub interval: Duration,
    /// How long one attempt waits for a job before giving up on it for now
    /// (a transient error: the next attempt polls the same job again).
    pub timeout: Duration,
}

/// Each row's answer from a job.
pub(super) type Answered = Vec<(usize, Result<(), String>)>;

/// The rows as a CSV upload: a header of every field any row has, sorted.
struct Upload {
    header: Vec<String>,
    csv: Vec<u8>,
    /// A row's cells → the rows that have exactly those (identical rows
    /// answer in turn).
    rows_by_cells: HashMap<Vec<String>, VecDeque<usize>>,
}

fn cell(value: Option<&Value>) -> String {
    match value {
        None => String::new(),
        Some(Value::Null) => NULL_CELL.to_string(),
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    }
}

fn upload(rows: &[(usize, Map<String, Value>)]) -> Upload {
    let mut header: Vec<String> = rows.iter().flat_map(|(_, fields)| fields.keys().cloned()).collect();
    header.sort();
    header.dedup();
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    writer.write_record(&header).expect("CSV into memory");
    let mut rows_by_cells: HashMap<Vec<String>, VecDeque<usize>> = HashMap::new();
    for (row, fields) in rows {
        let cells: Vec<String> = header.iter().map(|name| cell(fields.get(name))).collect();
        writer.write_record(&cells).expect("CSV into memory");
        rows_by_cells.entry(cells).or_default().push_back(*row);
    }
    Upload {
        header,
        csv: writer.into_inner().expect("CSV into memory"),
        rows_by_cells,
    }
}

/// One row of a result file: its cells in the upload header's order, and
/// the error it names (successful results have no `sf__Error`).
type ResultRow = (Vec<String>, Option<String>);

/// The job's rows of one result file.
fn result_rows(body: &[u8], header: &[String]) -> Result<Vec<ResultRow>, DeliveryError> {
    let unreadable = |e: csv::Error| DeliveryError::Transient(format!("Salesforce's job results are not CSV: {e}"));
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(body);
    let columns: Vec<String> = reader
        .headers()
        .map_err(unreadable)?
        .iter()
        .map(str::to_string)
        .collect();
    let position = |name: &str| columns.iter().position(|c| c == name);
    let positions: Vec<Option<usize>> = header.iter().map(|name| position(name)).collect();
    let error = position("sf__Error");
    let mut out = Vec::new();
    for record in reader.records() {
        let record = record.map_err(unreadable)?;
        let cells = positions
            .iter()
            .map(|p| p.and_then(|p| record.get(p)).unwrap_or_default().to_string())
            .collect();
        out.push((cells, error.and_then(|p| record.get(p)).map(str::to_string)));
    }
    Ok(out)
}

/// Runs one job over `rows` (or resumes the one `jobs` names) and answers
/// for each row. `benign` names the errors that count as done (a record that
/// exists already for an insert, one deleted already).
pub(super) async fn run(
    client: &Client,
    object: &str,
    operation: &Operation,
    rows: &[(usize, Map<String, Value>)],
    jobs: &JobLog,
    polling: Polling,
    benign: impl Fn(&str) -> bool,
) -> Result<Answered, DeliveryError> {
    let upload = upload(rows);
    let id = match resumable(client, jobs).await? {
        Some(id) => id,
        None => submit(client, object, operation, &upload, jobs).await?,
    };
    let job = wait(client, &id, polling).await?;
    let mut remaining = upload.rows_by_cells;
    let mut answered: Answered = Vec::with_capacity(rows.len());
    for results in ["successfulResults", "failedResults"] {
        let path = client.data(&format!("/jobs/ingest/{id}/{results}/"));
        let body = client.read(&path).await?.body;
        for (cells, error) in result_rows(&body, &upload.header)? {
            let Some(row) = remaining.get_mut(&cells).and_then(VecDeque::pop_front) else {
                continue;
            };
            answered.push((
                row,
                match error {
                    Some(error) if !error.is_empty() && !benign(&error) => Err(format!("Salesforce: {error}")),
                    _ => Ok(()),
                },
            ));
        }
    }
    // Rows in neither file were not processed: the job failed or was
    // aborted before them.
    let state = job["state"].as_str().unwrap_or("ended").to_string();
    let why = job["errorMessage"]
        .as_str()
        .filter(|m| !m.is_empty())
        .unwrap_or("no reason given");
    for rows in remaining.into_values() {
        for row in rows {
            answered.push((
                row,
                Err(format!(
                    "not processed: Salesforce's bulk job {id} ended {state} ({why}); the next run sends it again"
                )),
            ));
        }
    }
    Ok(answered)
}

/// The job an earlier attempt started for this batch, if it can still give
/// this batch's results: one still `Open` (its upload may be partial, and
/// nothing of it was processed) is aborted and started anew.
async fn resumable(client: &Client, jobs: &JobLog) -> Result<Option<String>, DeliveryError> {
    let Some(id) = jobs.started().await else {
        return Ok(None);
    };
    let info = match info(client, &id).await {
        Ok(info) => info,
        // Deleted, or never created where this client looks.
        Err(DeliveryError::Permanent(_) | DeliveryError::Rejected(_)) => return Ok(None),
        Err(other) => return Err(other),
    };
    match info["state"].as_str() {
        Some("Open") => {
            let path = client.data(&format!("/jobs/ingest/{id}/"));
            client
                .call(Method::PATCH, &path, Some(&json!({ "state": "Aborted" })))
                .await?;
            return Ok(None);
        }
        // Aborted by us (above) or by someone in the org: nothing of it can
        // be counted on.
        Some("Aborted") => return Ok(None),
        _ => {}
    }
    tracing::info!(job = %id, "resuming the Salesforce bulk job an earlier attempt started");
    Ok(Some(id))
}

async fn submit(
    client: &Client,
    object: &str,
    operation: &Operation,
    upload: &Upload,
    jobs: &JobLog,
) -> Result<String, DeliveryError> {
    let mut body = json!({
        "object": object,
        "operation": operation.name(),
        "contentType": "CSV",
        "lineEnding": "LF",
        "columnDelimiter": "COMMA",
    });
    if let Operation::Upsert(field) = operation {
        body["externalIdFieldName"] = json!(field);
    }
    let created = client
        .call(Method::POST, &client.data("/jobs/ingest/"), Some(&body))
        .await?;
    let created: Value = serde_json::from_slice(&created.body)
        .map_err(|e| DeliveryError::Transient(format!("Salesforce's answer to creating a bulk job: {e}")))?;
    let id = created["id"]
        .as_str()
        .filter(|id| !id.is_empty())
        .ok_or_else(|| DeliveryError::Transient("Salesforce created a bulk job without an id".into()))?
        .to_string();
    jobs.record(&id).await;
    tracing::info!(job = %id, rows = upload.rows_by_cells.values().map(VecDeque::len).sum::<usize>(), "Salesforce bulk job created");
    let path = client.data(&format!("/jobs/ingest/{id}/batches/"));
    client
        .call_with(Method::PUT, &path, Some(("text/csv", upload.csv.clone())))
        .await?;
    let path = client.data(&format!("/jobs/ingest/{id}/"));
    client
        .call(Method::PATCH, &path, Some(&json!({ "state": "UploadComplete" })))
        .await?;
    Ok(id)
}

async fn info(client: &Client, id: &str) -> Result<Value, DeliveryError> {
    let answer = client.read(&client.data(&format!("/jobs/ingest/{id}/"))).await?;
    serde_json::from_slice(&answer.body)
        .map_err(|e| DeliveryError::Transient(format!("Salesforce's bulk job info: {e}")))
}

/// Polls until the job ends (`JobComplete`, `Failed`, `Aborted`).
async fn wait(client: &Client, id: &str, polling: Polling) -> Result<Value, DeliveryError> {
    let deadline = Instant::now() + polling.timeout;
    let mut interval = polling.interval;
    loop {
        let info = info(client, id).await?;
        if matches!(info["state"].as_str(), Some("JobComplete" | "Failed" | "Aborted")) {
            return Ok(info);
        }
        if Instant::now() + interval > deadline {
            return Err(DeliveryError::Transient(format!(
                "Salesforce's bulk job {id} is still {} after {}; the next attempt polls it again",
                info["state"].as_str().unwrap_or("running"),
                humantime::format_duration(polling.timeout)
            )));
        }
        tokio::time::sleep(interval).await;
        interval = (interval.mul_f64(1.5)).min(MAX_POLL_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_become_csv_and_results_find_their_rows_by_their_cells() {
        let rows: Vec<(usize, Map<String, Value>)> = vec![
            (
                0,
                serde_json::from_value(json!({"Email": "a@x.com", "Score": 3})).unwrap(),
            ),
            (
                1,
                serde_json::from_value(json!({"Email": "b,\"q\"@x.com", "Phone": null})).unwrap(),
            ),
        ];
        let upload = upload(&rows);
        assert_eq!(upload.header, vec!["Email", "Phone", "Score"]);
        assert_eq!(
            String::from_utf8(upload.csv.clone()).unwrap(),
            "Email,Phone,Score\na@x.com,,3\n\"b,\"\"q\"\"@x.com\",#N/A,\n"
        );
        // Results repeat the cells in an order of their own, after sf__ columns.
        let failed = "\"sf__Id\",\"sf__Error\",Score,Email,Phone\n,REQUIRED_FIELD_MISSING:Required fields are missing: [LastName]:LastName --,,\"b,\"\"q\"\"@x.com\",#N/A\n";
        let parsed = result_rows(failed.as_bytes(), &upload.header).unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(upload.rows_by_cells[&parsed[0].0], VecDeque::from([1]));
        assert!(parsed[0].1.as_deref().unwrap().starts_with("REQUIRED_FIELD_MISSING"));
    }
}
