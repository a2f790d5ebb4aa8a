//! The `files` source: CSV, JSON-lines and Parquet files of a directory, of an
//! S3 prefix (a real S3 server on loopback) or of a GCS bucket (the
//! fake-gcs-server emulator), one file or every file a pattern matches;
//! gzipped files; bad input named by file and line; a million JSON lines, and
//! a million Parquet rows from S3, in bounded memory; every Parquet kind
//! typed; a model of files synced exactly as they are rewritten.

use ebb_coordinator::run::{RunStatus, TriggerOptions};
use ebb_coordinator::runtime::start_embedded;
use ebb_shared::config::{Config, FilesSourceConfig, ModelConfig, SourceConfig};
use ebb_shared::value::Value;
use ebb_tests::embedded::run_to_end;
use ebb_tests::gcs::FakeGcs;
use ebb_tests::model::sink_emails;
use ebb_tests::s3::S3Server;
use ebb_tests::sink::Sink;
use ebb_worker::error::TaskError;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

#[global_allocator]
static ALLOCATOR: ebb_tests::memory::Counting = ebb_tests::memory::Counting;

/// The memory test must run alone in this binary to measure.
static TURNS: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

fn source(url: &str) -> SourceConfig {
    SourceConfig::Files(FilesSourceConfig { url: url.to_string() })
}

fn model(file: &str) -> ModelConfig {
    ModelConfig {
        query: None,
        file: Some(file.to_string()),
        ..ModelConfig::query("files", "", "id")
    }
}

async fn read_all(source: &SourceConfig, model: &ModelConfig) -> Result<(Vec<String>, Vec<Vec<Value>>), TaskError> {
    let mut stream = ebb_worker::sources::open("files", source, "people", model).await?;
    let columns = stream.columns.iter().map(|c| c.name.clone()).collect();
    let mut rows = Vec::new();
    while let Some(batch) = stream.next_batch().await {
        rows.extend(batch?);
    }
    Ok((columns, rows))
}

fn jsonl(ids: std::ops::Range<u64>) -> String {
    ids.map(|i| {
        format!(
            "{{\"id\": {i}, \"email\": \"p{i}@example.com\", \"score\": {}.5, \"tags\": [\"a\"]}}\n",
            i % 7
        )
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_file_a_pattern_matches_is_read_in_name_order() {
    let _turn = TURNS.read().await;
    let dir = tempfile::tempdir().unwrap();
    let exports = dir.path().join("exports");
    std::fs::create_dir_all(exports.join("old")).unwrap();
    std::fs::write(exports.join("people-2.jsonl"), jsonl(100..250)).unwrap();
    std::fs::write(exports.join("people-1.jsonl"), jsonl(0..100)).unwrap();
    std::fs::write(exports.join("old/people-0.jsonl"), jsonl(900..901)).unwrap();
    std::fs::write(exports.join("people.csv"), "id,email\n1,a@example.com\n2,\n").unwrap();
    std::fs::write(exports.join("more.csv"), "id,email\n3,c@example.com\n").unwrap();
    let files = source(dir.path().to_str().unwrap());

    let (columns, rows) = read_all(&files, &model("exports/people-*.jsonl")).await.unwrap();
    assert_eq!(columns, ["id", "email", "score", "tags"]);
    assert_eq!(rows.len(), 250, "both files, not the one in old/");
    assert_eq!(rows[0][0], Value::Int(0), "people-1 first");
    assert_eq!(rows[100][0], Value::Int(100));
    assert_eq!(rows[1][2], Value::Float(1.5));
    assert_eq!(rows[1][3], Value::Json(serde_json::json!(["a"])));

    let (columns, rows) = read_all(&files, &model("exports/*.csv")).await.unwrap();
    assert_eq!(columns, ["id", "email"]);
    assert_eq!(
        rows,
        vec![
            vec![Value::Text("3".into()), Value::Text("c@example.com".into())],
            vec![Value::Text("1".into()), Value::Text("a@example.com".into())],
            vec![Value::Text("2".into()), Value::Null],
        ],
        "more.csv before people.csv; an empty field is null"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_files_are_named_by_file_and_line() {
    let _turn = TURNS.read().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.jsonl"),
        "{\"id\": 1}\n{\"id\": 2, \"extra\": true}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("b.jsonl"), "{\"id\": 1}\nnot json\n").unwrap();
    std::fs::write(dir.path().join("x.csv"), "id,email\n1,a\n").unwrap();
    std::fs::write(dir.path().join("y.csv"), "id,mail\n2,b\n").unwrap();
    std::fs::write(dir.path().join("notes.txt"), "hello\n").unwrap();
    let files = source(dir.path().to_str().unwrap());
    let read_error = |result: Result<_, TaskError>| result.expect_err("refused").to_string();

    let text = read_error(read_all(&files, &model("a.jsonl")).await);
    assert!(text.contains("a.jsonl, line 2") && text.contains("\"extra\""), "{text}");
    let text = read_error(read_all(&files, &model("b.jsonl")).await);
    assert!(
        text.contains("b.jsonl, line 2") && text.contains("not a JSON object"),
        "{text}"
    );
    let text = read_error(read_all(&files, &model("*.csv")).await);
    assert!(text.contains("y.csv has the columns id, mail"), "{text}");
    let error = read_all(&files, &model("missing-*.jsonl"))
        .await
        .expect_err("nothing matches");
    assert!(
        matches!(error, TaskError::Query { .. }) && error.to_string().contains("no file matches"),
        "{error}"
    );
    let text = read_error(read_all(&files, &model("notes.txt")).await);
    assert!(text.contains("set the model's `format`"), "{text}");
    let nowhere = source(dir.path().join("nowhere").to_str().unwrap());
    let error = read_all(&nowhere, &model("a.jsonl")).await.expect_err("no directory");
    assert!(matches!(error, TaskError::SourceUnreachable { .. }), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_of_an_s3_prefix_stream_from_the_server() {
    let _turn = TURNS.read().await;
    let server = S3Server::start("ebb-exports").await.unwrap();
    // The credentials reach the source through the environment, as in production.
    std::env::set_var("AWS_ACCESS_KEY_ID", server.access_key());
    std::env::set_var("AWS_SECRET_ACCESS_KEY", server.secret_key());
    let url = server.store_url("daily");
    let upload = ebb_shared::storage::Storage::from_url(&url).unwrap();
    upload
        .create("people/part-0001.jsonl", jsonl(0..3_000).into_bytes())
        .await
        .unwrap();
    upload
        .create("people/part-0002.jsonl", jsonl(3_000..5_000).into_bytes())
        .await
        .unwrap();
    let (_, rows) = read_all(&source(&url), &model("people/part-*.jsonl")).await.unwrap();
    assert_eq!(rows.len(), 5_000);
    assert_eq!(rows[4_999][1], Value::Text("p4999@example.com".into()));
}

/// `text` gzipped, as one gzip member per piece of `pieces` bytes: exports
/// written in parallel are often members written one after another.
fn gzipped(text: &str, pieces: usize) -> Vec<u8> {
    use std::io::Write;
    let mut out = Vec::new();
    for piece in text.as_bytes().chunks(pieces) {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(piece).unwrap();
        out.extend(encoder.finish().unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzipped_files_stream_decompressed_whatever_their_name() {
    let _turn = TURNS.read().await;
    let dir = tempfile::tempdir().unwrap();
    let csv: String = std::iter::once("id,email\n".to_string())
        .chain((0..20_000).map(|i| format!("{i},p{i}@example.com\n")))
        .collect();
    std::fs::write(dir.path().join("people.csv.gz"), gzipped(&csv, 64 << 10)).unwrap();
    // Gzipped under a plain name: the first bytes tell.
    std::fs::write(dir.path().join("part-1.jsonl"), gzipped(&jsonl(0..1_000), 1 << 20)).unwrap();
    std::fs::write(dir.path().join("part-2.jsonl"), jsonl(1_000..1_500)).unwrap();
    let mut broken = gzipped(&jsonl(0..1_000), 1 << 20);
    broken.truncate(broken.len() / 2);
    std::fs::write(dir.path().join("broken.jsonl.gz"), broken).unwrap();
    let files = source(dir.path().to_str().unwrap());

    let (columns, rows) = read_all(&files, &model("people.csv.gz")).await.unwrap();
    assert_eq!(columns, ["id", "email"], "the format is the name's before .gz");
    assert_eq!(rows.len(), 20_000, "every gzip member is read");
    assert_eq!(
        rows[19_999],
        vec![Value::Text("19999".into()), Value::Text("p19999@example.com".into())]
    );
    let (_, rows) = read_all(&files, &model("part-*.jsonl")).await.unwrap();
    assert_eq!(rows.len(), 1_500, "a gzipped file and a plain one, in one model");
    assert_eq!(rows[1_499][0], Value::Int(1_499));

    let error = read_all(&files, &model("broken.jsonl.gz"))
        .await
        .expect_err("cut short");
    assert!(
        error.to_string().contains("broken.jsonl.gz"),
        "the file is named: {error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_of_a_gcs_bucket_stream_from_the_emulator() {
    let _turn = TURNS.read().await;
    let server = FakeGcs::start("ebb-exports").await;
    server
        .put("daily/people/part-0001.jsonl", jsonl(0..3_000).into_bytes())
        .await;
    server
        .put("daily/people/part-0002.jsonl", gzipped(&jsonl(3_000..5_000), 1 << 20))
        .await;
    server.put("daily/people/other.csv", b"id\n1\n".to_vec()).await;
    server
        .put("elsewhere/people/part-0003.jsonl", jsonl(9_000..9_001).into_bytes())
        .await;
    server
        .put(
            "daily/people.parquet",
            parquet_people(0..10_000, parquet::basic::Compression::ZSTD(Default::default())),
        )
        .await;
    let files = source(&server.source_url("daily"));

    let (columns, rows) = read_all(&files, &model("people/part-*.jsonl")).await.unwrap();
    assert_eq!(columns, ["id", "email", "score", "tags"]);
    assert_eq!(
        rows.len(),
        5_000,
        "both parts below the prefix, in name order, nothing else"
    );
    assert_eq!(rows[0][0], Value::Int(0));
    assert_eq!(rows[4_999][1], Value::Text("p4999@example.com".into()));

    // Parquet by ranged reads of the object.
    let (_, rows) = read_all(&files, &model("people.parquet")).await.unwrap();
    assert_eq!(rows.len(), 10_000);
    assert_eq!(rows[9_999][0], Value::Int(9_999));

    let error = read_all(&files, &model("people/missing-*.jsonl"))
        .await
        .expect_err("nothing matches");
    assert!(error.to_string().contains("no file matches"), "{error}");
    let error = read_all(&files, &model("people/absent.jsonl"))
        .await
        .expect_err("no such object");
    assert!(
        error.to_string().contains("absent.jsonl"),
        "the object is named: {error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_json_lines_stream_in_bounded_memory() {
    let _alone = TURNS.write().await;
    let dir = tempfile::tempdir().unwrap();
    {
        use std::io::Write;
        let mut file = std::io::BufWriter::new(std::fs::File::create(dir.path().join("big.jsonl")).unwrap());
        for i in 1..=1_000_000u64 {
            writeln!(
                file,
                "{{\"id\": {i}, \"email\": \"person{i}@example.com\", \"score\": {}}}",
                i % 1000
            )
            .unwrap();
        }
    }
    let files = source(dir.path().to_str().unwrap());
    let ((count, sum), growth) = ids_read_and_heap_growth(&files, "big.jsonl").await;
    eprintln!("1000000 JSON lines read; the heap grew by at most {} KiB", growth >> 10);
    assert_eq!((count, sum), (1_000_000, 500_000_500_000));
    assert!(
        growth < ebb_tests::source_contract::STREAMING_BUDGET,
        "grew by {} MiB",
        growth >> 20
    );
}

/// Reads every row of a model whose first column is an integer id: how many
/// rows, the sum of their ids, and the heap's peak growth meanwhile.
async fn ids_read_and_heap_growth(files: &SourceConfig, file: &str) -> ((u64, u64), usize) {
    ebb_tests::memory::peak_growth(async {
        let mut stream = ebb_worker::sources::open("files", files, "big", &model(file))
            .await
            .unwrap();
        let (mut count, mut sum) = (0u64, 0u64);
        while let Some(batch) = stream.next_batch().await {
            for row in batch.unwrap() {
                count += 1;
                let Value::Int(id) = row[0] else { panic!("{row:?}") };
                sum += id as u64;
            }
        }
        (count, sum)
    })
    .await
}

fn config(dir: &Path, sink_url: &str) -> Arc<Config> {
    let text = format!(
        "sources:\n  exports: {{ type: files, url: data }}\n\
         models:\n  people: {{ source: exports, file: \"people-*.jsonl\", primary_key: id }}\n\
         destinations:\n  api: {{ type: http, url: \"{sink_url}\", batch_size: 500 }}\n\
         syncs:\n  people-api: {{ model: people, destination: api, mode: mirror, max_rows_per_shard: 10000 }}\n"
    );
    Arc::new(ebb_worker::config::from_yaml_str(Path::new("files.yaml"), &text, dir).unwrap())
}

fn write_people(dir: &Path, people: &BTreeMap<u64, String>) {
    let data = dir.join("data");
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).unwrap();
    // Two files, split by id, as an export job writes them.
    for (part, range) in [(1, 0..20_000u64), (2, 20_000..u64::MAX)] {
        let lines: String = people
            .range(range)
            .map(|(id, email)| format!("{{\"id\": {id}, \"email\": \"{email}\"}}\n"))
            .collect();
        std::fs::write(data.join(format!("people-{part}.jsonl")), lines).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_of_files_syncs_exactly_as_they_are_rewritten() {
    let _turn = TURNS.read().await;
    let dir = tempfile::tempdir().unwrap();
    let mut people: BTreeMap<u64, String> = (1..=30_000).map(|i| (i, format!("p{i}@example.com"))).collect();
    write_people(dir.path(), &people);
    let sink = Sink::start().await;
    let runtime = start_embedded(config(dir.path(), &sink.url()), &dir.path().join("state"), 2, 2)
        .await
        .unwrap();
    let mut expected = [30_000u64, 0, 0];
    for round in 0..3u64 {
        let run = run_to_end(&runtime, "people-api", TriggerOptions::default()).await;
        assert_eq!(run.status, RunStatus::Success, "round {round}: {run:?}");
        let planned = [run.planned.added, run.planned.changed, run.planned.removed];
        assert_eq!(planned, expected, "round {round}");
        let model: BTreeMap<String, String> = people
            .iter()
            .map(|(id, email)| (id.to_string(), email.clone()))
            .collect();
        assert_eq!(sink_emails(&sink), model, "round {round}: destination == files");
        let removed: Vec<u64> = people.keys().copied().filter(|id| id % 911 == round).collect();
        for id in &removed {
            people.remove(id);
        }
        let changed: Vec<u64> = people.keys().copied().filter(|id| id % 433 == round + 1).collect();
        for id in &changed {
            people.insert(*id, format!("changed{round}-{id}@example.com"));
        }
        for id in 0..200 {
            people.insert(100_000 + round * 1_000 + id, format!("new{id}@example.com"));
        }
        write_people(dir.path(), &people);
        expected = [200, changed.len() as u64, removed.len() as u64];
    }
    runtime.shutdown(Duration::from_secs(10)).await;
}

/// A Parquet file of `ids` with a column of every kind Ebb types, written by
/// the Arrow project's own writer with `compression`; row groups of 50,000.
fn parquet_people(ids: std::ops::Range<i64>, compression: parquet::basic::Compression) -> Vec<u8> {
    use arrow_array::builder::{ListBuilder, StringBuilder};
    use arrow_array::{
        ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int64Array, RecordBatch,
        StringArray, TimestampMicrosecondArray, TimestampMillisecondArray, UInt32Array,
    };
    let n = ids.clone().count();
    let every = |f: &dyn Fn(i64) -> bool| ids.clone().map(f).collect::<Vec<bool>>();
    let null_on_sevens = every(&|i| i % 7 != 0);
    let mut tags = ListBuilder::new(StringBuilder::new());
    for i in ids.clone() {
        tags.values().append_value(format!("t{}", i % 3));
        tags.values().append_value("x");
        tags.append(i % 5 != 0);
    }
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("id", Arc::new(Int64Array::from_iter_values(ids.clone()))),
        (
            "email",
            Arc::new(StringArray::from_iter(
                ids.clone().map(|i| Some(format!("p{i}@example.com"))),
            )),
        ),
        (
            "score",
            Arc::new(
                Decimal128Array::from_iter(ids.clone().map(|i| (i % 7 != 0).then_some(i as i128 * 100 + 25)))
                    .with_precision_and_scale(12, 2)
                    .unwrap(),
            ),
        ),
        (
            "ratio",
            Arc::new(Float64Array::from_iter_values(ids.clone().map(|i| i as f64 / 4.0))),
        ),
        ("active", Arc::new(BooleanArray::from(every(&|i| i % 2 == 0)))),
        (
            "born",
            Arc::new(Date32Array::from_iter_values(
                ids.clone().map(|i| 19_000 + i as i32 % 365),
            )),
        ),
        (
            "seen",
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(ids.clone().map(|i| 1_700_000_000_000_000 + i * 1_500_000))
                    .with_timezone("UTC"),
            ),
        ),
        (
            "local",
            Arc::new(TimestampMillisecondArray::from_iter_values(
                ids.clone().map(|i| 1_700_000_000_000 + i),
            )),
        ),
        (
            "blob",
            Arc::new(BinaryArray::from_iter(
                ids.clone().map(|i| Some(vec![0u8, 255, i as u8])),
            )),
        ),
        ("tags", Arc::new(tags.finish())),
        (
            "visits",
            Arc::new(UInt32Array::from_iter(
                ids.clone()
                    .zip(null_on_sevens)
                    .map(|(i, keep)| keep.then_some(i as u32)),
            )),
        ),
    ];
    assert_eq!(columns[0].1.len(), n);
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let properties = parquet::file::properties::WriterProperties::builder()
        .set_compression(compression)
        .set_max_row_group_row_count(Some(50_000))
        .build();
    let mut out = Vec::new();
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), Some(properties)).unwrap();
    for start in (0..n).step_by(10_000) {
        writer.write(&batch.slice(start, 10_000.min(n - start))).unwrap();
    }
    writer.close().unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_files_read_every_kind_typed_by_its_arrow_type() {
    use parquet::basic::{Compression, ZstdLevel};
    let _turn = TURNS.read().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("people-1.parquet"),
        parquet_people(0..1_000, Compression::SNAPPY),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("people-2.parquet"),
        parquet_people(1_000..1_500, Compression::ZSTD(ZstdLevel::default())),
    )
    .unwrap();
    let files = source(dir.path().to_str().unwrap());
    let (columns, rows) = read_all(&files, &model("people-*.parquet")).await.unwrap();
    assert_eq!(
        columns,
        ["id", "email", "score", "ratio", "active", "born", "seen", "local", "blob", "tags", "visits"]
    );
    assert_eq!(rows.len(), 1_500);
    let ts = |text: &str| Value::Timestamp(text.into());
    assert_eq!(
        rows[1_002],
        vec![
            Value::Int(1_002),
            Value::Text("p1002@example.com".into()),
            Value::Decimal("1002.25".into()),
            Value::Float(250.5),
            Value::Bool(true),
            ts("2022-10-07"),
            ts("2023-11-14T22:38:23.000000Z"),
            ts("2023-11-14T22:13:21.002"),
            Value::Bytes(vec![0, 255, 234]),
            Value::Json(serde_json::json!(["t0", "x"])),
            Value::Int(1_002),
        ]
    );
    // Nulls of every kind that has them.
    assert_eq!(rows[14][2], Value::Null, "{:?}", rows[14]);
    assert_eq!(rows[14][10], Value::Null);
    assert_eq!(rows[15][9], Value::Null);
    // The columns show their Arrow types.
    let described = ebb_worker::sources::describe("files", &files, "people", &model("people-*.parquet"))
        .await
        .unwrap();
    let types: Vec<&str> = described.iter().map(|c| c.source_type.as_str()).collect();
    assert_eq!(types[2], "Decimal128(12, 2)");
    assert!(
        types[6].starts_with("Timestamp(µs") || types[6].starts_with("Timestamp(Microsecond"),
        "{types:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parquet_files_are_named() {
    let _turn = TURNS.read().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.parquet"),
        parquet_people(0..10, parquet::basic::Compression::SNAPPY),
    )
    .unwrap();
    std::fs::write(dir.path().join("b.parquet"), b"PAR1 but not really").unwrap();
    let files = source(dir.path().to_str().unwrap());
    let error = read_all(&files, &model("*.parquet"))
        .await
        .expect_err("b is no Parquet file");
    let text = error.to_string();
    assert!(text.contains("b.parquet: not a Parquet file Ebb can read"), "{text}");
    // A file with other columns than the first is refused by name.
    let other = {
        use arrow_array::{Int64Array, RecordBatch};
        let batch = RecordBatch::try_from_iter([("key", Arc::new(Int64Array::from(vec![1])) as _)]).unwrap();
        let mut out = Vec::new();
        let mut writer = parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        out
    };
    std::fs::write(dir.path().join("b.parquet"), other).unwrap();
    let error = read_all(&files, &model("*.parquet"))
        .await
        .expect_err("b has other columns");
    let text = error.to_string();
    assert!(
        text.contains("b.parquet has columns key where the first file has id, email"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_on_s3_streams_a_million_rows_in_bounded_memory() {
    let _alone = TURNS.write().await;
    let server = S3Server::start("ebb-parquet").await.unwrap();
    std::env::set_var("AWS_ACCESS_KEY_ID", server.access_key());
    std::env::set_var("AWS_SECRET_ACCESS_KEY", server.secret_key());
    let url = server.store_url("exports");
    let upload = ebb_shared::storage::Storage::from_url(&url).unwrap();
    for (part, ids) in [(1, 0..500_000), (2, 500_000..1_000_000)] {
        upload
            .create(
                &format!("people/part-{part}.parquet"),
                parquet_people(ids, parquet::basic::Compression::SNAPPY),
            )
            .await
            .unwrap();
    }
    let files = source(&url);
    let reading = std::time::Instant::now();
    let ((count, sum), growth) = ids_read_and_heap_growth(&files, "people/part-*.parquet").await;
    eprintln!(
        "1000000 Parquet rows read from S3 in {:.1} s; the heap grew by at most {} KiB",
        reading.elapsed().as_secs_f64(),
        growth >> 10
    );
    assert_eq!((count, sum), (1_000_000, 499_999_500_000));
    assert!(
        growth < ebb_tests::source_contract::STREAMING_BUDGET,
        "grew by {} MiB",
        growth >> 20
    );
}
