//! `ebb quickstart`: a first sync on embedded defaults, with nothing installed.
//!
//! It writes a CSV model of 1,000 customers and a config that syncs them in
//! mirror mode to a JSON-lines file destination (an append-only log with one
//! line per operation sent), runs the sync, changes a few rows (updates,
//! inserts, deletes), and runs it again to show that only the changes are sent.

use crate::api::views::TriggerBody;
use crate::client::Backend;
use crate::output;
use anyhow::Context;
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

/// `println!` that ends quietly when the reader of a pipe goes away.
macro_rules! say {
    ($($arg:tt)*) => {
        crate::output::print(&format!("{}\n", format_args!($($arg)*)))
    };
}

const CUSTOMERS: usize = 1_000;
const SYNC: &str = "customers-to-file";

const CONFIG: &str = r#"# Ebb quickstart: a CSV model of customers, synced in mirror mode to a
# JSON-lines file that gets one line per operation sent (upsert or delete).
sources:
  files:
    type: csv
    path: data
models:
  customers:
    source: files
    file: customers.csv
    primary_key: id
destinations:
  outbox:
    type: jsonl
    path: out/customers.jsonl
    batch_size: 100
syncs:
  customers-to-file:
    model: customers
    destination: outbox
    mode: mirror
    mappings:
      - { from: id, to: customer_id }
      - { from: email, to: email }
      - { from: plan, to: plan }
"#;

fn customers_csv(changed: bool) -> String {
    let plans = ["free", "starter", "pro", "enterprise"];
    let mut csv = String::from("id,email,name,plan\n");
    for id in 1..=CUSTOMERS {
        // The second version: 3 customers leave, 5 change plans, 10 sign up;
        // 7 names change too, which nothing maps, so they are not sent.
        if changed && (id % 250 == 0 && id < 1000) {
            continue;
        }
        let mut plan = plans[id % plans.len()];
        if changed && id % 200 == 1 {
            plan = "enterprise-plus";
        }
        let name = if changed && id % 100 == 7 {
            format!("Customer {id} (renamed)")
        } else {
            format!("Customer {id}")
        };
        let _ = writeln!(csv, "{id},customer{id}@example.com,{name},{plan}");
    }
    if changed {
        for id in CUSTOMERS + 1..=CUSTOMERS + 10 {
            let _ = writeln!(csv, "{id},customer{id}@example.com,Customer {id},free");
        }
    }
    csv
}

pub async fn run(dir: &Path) -> anyhow::Result<ExitCode> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir.join("data")).with_context(|| format!("cannot create {}", dir.display()))?;
    let config_path = dir.join("ebb.yaml");
    std::fs::write(&config_path, CONFIG)?;
    let data = dir.join("data/customers.csv");
    std::fs::write(&data, customers_csv(false))?;
    let config = Arc::new(ebb_worker::config::load(&config_path)?);
    let outbox = dir.join("out/customers.jsonl");

    say!("Ebb quickstart in {}/", dir.display());
    say!("  model: {} ({CUSTOMERS} customers)", data.display());
    say!(
        "  sync:  {SYNC}, mirror mode, to {} (a log: one line per operation sent)\n",
        outbox.display()
    );

    let runtime = crate::runtime::start_embedded(config, &dir.join(".ebb"), 2, 2).await?;
    let backend = Backend::Embedded(runtime);
    let result = async {
        say!("1. First run: every row is new.");
        let first = run_once(&backend).await?;
        output::print(&output::summary(&first));
        let lines_before = line_count(&outbox);

        std::fs::write(&data, customers_csv(true))?;
        say!("\n2. Changed the model: 5 plans updated, 10 customers added, 3 removed, 7 names edited (names are not mapped).");
        say!("   Second run: only the changes are sent.");
        let second = run_once(&backend).await?;
        output::print(&output::summary(&second));

        let text = std::fs::read_to_string(&outbox).unwrap_or_default();
        let sent: Vec<&str> = text.lines().skip(lines_before).collect();
        say!("\n   What the second run appended to {} ({} lines):", outbox.display(), sent.len());
        for line in sent.iter().take(6) {
            say!("   {line}");
        }
        if sent.len() > 6 {
            say!("   … and {} more", sent.len() - 6);
        }
        let ebb = crate::output::this_command();
        say!("\nNext, edit {} and run the sync again, or list both runs:", data.display());
        for command in [
            format!("{ebb} sync run {SYNC} --config {}", config_path.display()),
            format!("{ebb} runs list {SYNC} --config {}", config_path.display()),
        ] {
            say!("  $ {command}");
        }
        if ebb != "ebb" {
            say!("(`cargo install --path coordinator --locked` puts `ebb` on your PATH.)");
        }
        let ok = first.status == "success" && second.status == "success";
        Ok::<_, anyhow::Error>(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
    }
    .await;
    backend.close().await;
    result
}

async fn run_once(backend: &Backend) -> anyhow::Result<crate::api::views::RunView> {
    let run_id = backend.trigger(SYNC, TriggerBody::default()).await?;
    output::follow(backend, &run_id, true).await
}

fn line_count(path: &Path) -> usize {
    std::fs::read_to_string(path).map(|t| t.lines().count()).unwrap_or(0)
}
