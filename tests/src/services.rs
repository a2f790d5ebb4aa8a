//! The real services the tests need. When one is not running, the test fails
//! and says how to start it; it never skips itself.

use sqlx::{Connection, Executor, PgConnection};

pub fn postgres_admin_url() -> String {
    std::env::var("EBB_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn rabbitmq_url() -> String {
    std::env::var("EBB_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A database of its own for one test, on the local PostgreSQL; dropped (with
/// any connection still open to it) when this value is.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let statement = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let dropped = run_blocking(async move {
            let mut connection = PgConnection::connect(&postgres_admin_url()).await?;
            connection.execute(statement.as_str()).await?;
            Ok::<_, sqlx::Error>(())
        });
        if let Err(error) = dropped {
            eprintln!("warning: could not drop test database {}: {error}", self.name);
        }
    }
}

/// Runs a future to its end from anywhere, an async test's `Drop` included: on a
/// thread of its own with a runtime of its own.
fn run_blocking<T: Send + 'static>(future: impl std::future::Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for clean-up")
            .block_on(future)
    })
    .join()
    .expect("clean-up thread")
}

/// Deletes the queues and exchange of an Ebb installation's queue-name prefix.
pub fn delete_rabbitmq_queues(url: &str, prefix: &str) {
    let settings = ebb_shared::queue::AmqpSettings::new(url).with_prefix(prefix);
    let deleted = run_blocking(async move {
        let queue = ebb_shared::queue::AmqpQueue::connect(settings).await?;
        queue.delete_topology().await
    });
    if let Err(error) = deleted {
        eprintln!("warning: could not delete the test queues {prefix}*: {error}");
    }
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

pub fn mysql_admin_url() -> String {
    std::env::var("EBB_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

/// A MariaDB (or MySQL) database of its own for one test; dropped when this
/// value is.
pub struct TestMysqlDatabase {
    pub name: String,
    pub url: String,
}

impl Drop for TestMysqlDatabase {
    fn drop(&mut self) {
        let statement = format!("DROP DATABASE IF EXISTS {}", self.name);
        let dropped = run_blocking(async move {
            let mut connection = sqlx::MySqlConnection::connect(&mysql_admin_url()).await?;
            connection.execute(statement.as_str()).await?;
            Ok::<_, sqlx::Error>(())
        });
        if let Err(error) = dropped {
            eprintln!("warning: could not drop test database {}: {error}", self.name);
        }
    }
}

/// A fresh database on the local MariaDB; fails saying how to start it.
pub async fn fresh_mysql_database(label: &str) -> TestMysqlDatabase {
    let admin = mysql_admin_url();
    let mut connection = sqlx::MySqlConnection::connect(&admin).await.unwrap_or_else(|error| {
        panic!(
            "MariaDB is not reachable at {admin} ({error}). Start it with: \
             start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd \
             (or point EBB_TEST_MYSQL_URL at a server)"
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
    TestMysqlDatabase {
        url: format!("{base}/{name}"),
        name,
    }
}
