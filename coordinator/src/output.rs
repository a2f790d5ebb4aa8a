//! What the CLI prints: a live progress bar while a run is in flight (on a
//! terminal), and the run's summary when it ends.

use crate::api::views::{RunRowView, RunView};
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
            bar.set_message(format!(
                "{}  {} rows queried  {} rows answered",
                run.status, run.query_size, sent
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
        "  rows queried: {}   invalid: {} (null key {}, duplicate key {})   shards: {}\n",
        thousands(run.query_size),
        thousands(invalid),
        thousands(run.invalid_rows.null_key_count),
        thousands(run.invalid_rows.duplicate_key_count),
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

pub fn rows_table(rows: &[RunRowView]) -> String {
    let mut out = format!("{:<10} {:<9} {:<24} {}\n", "OUTCOME", "OPERATION", "KEY", "ERROR");
    for row in rows {
        out.push_str(&format!(
            "{:<10} {:<9} {:<24} {}\n",
            row.outcome,
            row.operation.as_deref().unwrap_or("-"),
            row.key,
            row.error.as_deref().unwrap_or("")
        ));
    }
    out
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
