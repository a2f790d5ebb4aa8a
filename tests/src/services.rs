//! The real services the tests need. When one is not running, the test fails
//! and says how to start it; it never skips itself.

use sqlx::{Connection, Executor, PgConnection};

pub fn postgres_admin_url() -> String {
    std::env::var("EBB_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn rabbitmq_url() -> String {
    std::env::var("EBB_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A database of its own for one test, on the local PostgreSQL.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

pub async fn fresh_postgres_database(label: &str) -> TestDatabase {
    let admin = postgres_admin_url();
    let mut connection = PgConnection::connect(&admin).await.unwrap_or_else(|error| {
        panic!(
            "PostgreSQL is not reachable at {admin} ({error}). Start it with: \
             pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start \
             (or point EBB_TEST_POSTGRES_URL at a server)"
        )
    });
    let name = format!("ebb_{label}_{}", rand::random::<u32>());
    connection
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create test database");
    let base = admin
        .rsplit_once('/')
        .map(|(base, _)| base.to_string())
        .unwrap_or(admin.clone());
    TestDatabase {
        url: format!("{base}/{name}"),
        name,
    }
}

/// Fails with instructions when RabbitMQ is down.
pub async fn require_rabbitmq() -> String {
    let url = rabbitmq_url();
    let host = "127.0.0.1:5672";
    if tokio::net::TcpStream::connect(host).await.is_err() {
        panic!(
            "RabbitMQ is not reachable at {host}. Start it with: rabbitmq-server -detached && rabbitmqctl await_startup \
             (or point EBB_TEST_AMQP_URL at a broker)"
        );
    }
    url
}

/// Deletes Ebb's queues so a test starts from empty ones.
pub async fn purge_rabbitmq_queues() {
    for queue in ["ebb.tasks", "ebb.results", "ebb.tasks.dead"] {
        let _ = tokio::process::Command::new("rabbitmqctl")
            .args(["delete_queue", queue])
            .output()
            .await;
    }
}
