//! What the CLI prints: a live progress bar while a run is in flight (on a
//! terminal), and the run's summary when it ends.

use crate::api::views::{RowsPage, RunView, SyncView};
use crate::client::Backend;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

/// Polls a run until it finishes, drawing its progress.
pub async fn follow(backend: &Backend, run_id: &str, show_progress: bool) -> anyhow::Result<RunView> {
    let bar = if show_progress && std::io::stderr().is_terminal() {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} shards  {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        Some(bar)
    } else {
        None
    };
    let mut last_status = String::new();
    loop {
        let run = backend.run(run_id).await?;
        if let Some(bar) = &bar {
            bar.set_length(run.shards.total.max(1));
            bar.set_position(run.shards.done);
            let sent = run.successful_rows.total() + run.failed_rows.total() + run.rows_in_progress;
            let status = match (run.status.as_str(), run.extract_tasks.total) {
                ("querying", parts) if parts > 1 => {
                    format!("querying ({}/{parts} extract tasks)", run.extract_tasks.done)
                }
                _ => run.status.clone(),
            };
            bar.set_message(format!(
                "{status}  {} rows queried  {} rows answered",
                run.query_size, sent
            ));
        } else if run.status != last_status {
            eprintln!("run {}: {}", run.id, run.status);
        }
        last_status = run.status.clone();
        if run.is_finished() {
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            return Ok(run);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn summary(run: &RunView) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "Run {} of sync {}: {} in {:.1}s\n",
        run.id,
        run.sync_id,
        run.status.to_uppercase(),
        run.elapsed_seconds()
    ));
    let invalid = run.invalid_rows.null_key_count + run.invalid_rows.duplicate_key_count;
    out.push_str(&format!(
        "  rows queried: {}   invalid: {} (null key {}, duplicate key {})   extract tasks: {}   shards: {}\n",
        thousands(run.query_size),
        thousands(invalid),
        thousands(run.invalid_rows.null_key_count),
        thousands(run.invalid_rows.duplicate_key_count),
        run.extract_tasks.total,
        run.shards.total
    ));
    out.push_str(&format!(
        "  {:<10} {:>10} {:>10} {:>10}\n",
        "", "added", "changed", "removed"
    ));
    for (label, counts) in [
        ("planned", &run.planned_rows),
        ("succeeded", &run.successful_rows),
        ("failed", &run.failed_rows),
    ] {
        out.push_str(&format!(
            "  {:<10} {:>10} {:>10} {:>10}\n",
            label,
            thousands(counts.added_count),
            thousands(counts.changed_count),
            thousands(counts.removed_count)
        ));
    }
    if let Some(error) = &run.error {
        out.push_str(&format!("  error: {error}\n"));
    }
    out
}

pub fn rows_table(page: &RowsPage) -> String {
    let mut out = format!("{:<10} {:<9} {:<24} {}\n", "OUTCOME", "OPERATION", "KEY", "ERROR");
    for row in &page.data {
        out.push_str(&format!(
            "{:<10} {:<9} {:<24} {}\n",
            row.outcome,
            row.operation.as_deref().unwrap_or("-"),
            if row.key.is_empty() { "(null)" } else { row.key.as_str() },
            row.error.as_deref().unwrap_or("")
        ));
    }
    if page.has_more {
        out.push_str(&format!(
            "… {} more (showing {} of {}): --limit N shows more, --format csv or jsonl exports all\n",
            thousands(page.total - page.data.len() as u64),
            thousands(page.data.len() as u64),
            thousands(page.total)
        ));
    }
    out
}

/// The live debugger's batches, each with its requests and answers; with a
/// key, that row's outcome in each batch.
pub fn requests(page: &crate::api::views::RequestsPage, key: Option<&str>) -> String {
    let mut out = String::new();
    if page.data.is_empty() {
        out.push_str("no requests kept for this run (or none match)\n");
    }
    for batch in &page.data {
        let at = chrono::DateTime::from_timestamp_millis(batch.at_ms)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
            .unwrap_or_default();
        let failed = batch.rows.iter().filter(|(_, error)| error.is_some()).count();
        out.push_str(&format!(
            "{at}  {}  {} rows, {} failed  — {}\n",
            batch.action,
            thousands(batch.rows.len() as u64),
            thousands(failed as u64),
            batch.outcome
        ));
        if let Some((row, error)) = key.and_then(|key| batch.rows.iter().find(|(row, _)| row == key)) {
            out.push_str(&format!(
                "  row {row}: {}\n",
                error
                    .as_deref()
                    .map_or("went through".to_string(), |e| format!("failed: {e}"))
            ));
        }
        for exchange in &batch.exchanges {
            let answer = match (exchange.status, &exchange.error) {
                (Some(status), _) => status.to_string(),
                (None, Some(error)) => format!("no answer: {error}"),
                (None, None) => "no answer".to_string(),
            };
            out.push_str(&format!(
                "  {} {} → {answer} in {} ms\n",
                exchange.method, exchange.url, exchange.elapsed_ms
            ));
            let excerpt = |text: &str| {
                let line: String = text.chars().take(300).collect();
                if text.chars().count() > 300 {
                    format!("{line}…")
                } else {
                    line
                }
            };
            if let Some(body) = &exchange.request_body {
                out.push_str(&format!("    sent: {}\n", excerpt(body)));
            }
            if let Some(body) = &exchange.response_body {
                out.push_str(&format!("    got:  {}\n", excerpt(body)));
            }
        }
    }
    if page.has_more {
        out.push_str("… more: --limit N shows more, --json gives them whole\n");
    }
    out
}

pub fn syncs_table(syncs: &[SyncView]) -> String {
    let mut out = format!(
        "{:<30} {:<20} {:<20} {:<10} {}\n",
        "SYNC", "MODEL", "DESTINATION", "MODE", "SCHEDULE"
    );
    for sync in syncs {
        out.push_str(&format!(
            "{:<30} {:<20} {:<20} {:<10} {}\n",
            sync.id,
            sync.model,
            sync.destination,
            sync.mode,
            sync.schedule.as_deref().unwrap_or("manual")
        ));
    }
    out
}

/// A model's first rows as a table: a header of column names over their
/// source types (the primary key marked), then one line a row, each cell cut
/// to 40 characters, and how many rows were read.
pub fn preview_table(preview: &ebb_worker::sources::Preview, primary_key: &str) -> String {
    const WIDEST: usize = 40;
    let cut = |text: String| -> String {
        let text = text.replace(['\n', '\t'], " ");
        if text.chars().count() > WIDEST {
            format!("{}…", text.chars().take(WIDEST - 1).collect::<String>())
        } else {
            text
        }
    };
    let header: Vec<String> = preview
        .columns
        .iter()
        .map(|c| {
            if c.name == primary_key {
                format!("{} (key)", c.name)
            } else {
                c.name.clone()
            }
        })
        .collect();
    let types: Vec<String> = preview.columns.iter().map(|c| c.source_type.to_lowercase()).collect();
    let cells: Vec<Vec<String>> = preview
        .rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|value| match value {
                    ebb_shared::value::Value::Null => "null".to_string(),
                    ebb_shared::value::Value::Text(text)
                    | ebb_shared::value::Value::Timestamp(text)
                    | ebb_shared::value::Value::Decimal(text) => cut(text.clone()),
                    other => cut(other.to_json().to_string()),
                })
                .collect()
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            let cell_width = cells.iter().map(|row| row[i].chars().count()).max().unwrap_or(0);
            header[i].chars().count().max(types[i].chars().count()).max(cell_width)
        })
        .collect();
    let line = |cells: &[String]| -> String {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(&header);
    out.push_str(&line(&types));
    for row in &cells {
        out.push_str(&line(row));
    }
    out.push_str(&format!(
        "({} row{})\n",
        thousands(preview.rows.len() as u64),
        if preview.rows.len() == 1 { "" } else { "s" }
    ));
    out
}

/// How to run this very `ebb` from the current directory, for hints that are
/// runnable as printed: `ebb` when that is what the PATH finds, else the
/// binary's path (relative when it lies below the current directory).
pub fn this_command() -> String {
    let Ok(exe) = std::env::current_exe().and_then(|p| p.canonicalize()) else {
        return "ebb".to_string();
    };
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("ebb"))
            .find(|candidate| candidate.is_file())
            .and_then(|found| found.canonicalize().ok())
            .is_some_and(|found| found == exe)
    });
    if on_path {
        return "ebb".to_string();
    }
    let shown = std::env::current_dir()
        .ok()
        .and_then(|cwd| cwd.canonicalize().ok())
        .and_then(|cwd| exe.strip_prefix(&cwd).ok().map(|p| p.to_path_buf()))
        .unwrap_or_else(|| exe.clone());
    let text = shown.display().to_string();
    if text.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+".contains(c)) {
        text
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// Writes to standard output. A reader that went away (`ebb … | head`) ends the
/// command quietly with status 0, as the tools it is piped into expect.
pub fn print(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout.write_all(text.as_bytes()).and_then(|_| stdout.flush()) {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to standard output: {error}");
        std::process::exit(i32::from(crate::cli::exit::OTHER));
    }
}

/// `print` of a value as pretty JSON, with a final newline.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    print(&text);
    Ok(())
}

/// Whether an error comes from writing into a closed pipe.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

pub fn runs_table(runs: &[RunView]) -> String {
    let mut out = format!(
        "{:<38} {:<11} {:<24} {:>9} {:>9} {:>9}\n",
        "RUN", "STATUS", "CREATED", "QUERIED", "SENT", "FAILED"
    );
    for run in runs {
        out.push_str(&format!(
            "{:<38} {:<11} {:<24} {:>9} {:>9} {:>9}\n",
            run.id,
            run.status,
            run.created_at,
            thousands(run.query_size),
            thousands(run.successful_rows.total()),
            thousands(run.failed_rows.total())
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands_separators() {
        assert_eq!(super::thousands(0), "0");
        assert_eq!(super::thousands(1234567), "1,234,567");
        assert_eq!(super::thousands(100), "100");
    }
}
