//! Fresh, migrated databases for tests (this crate's and the HTTP/CLI layers').
//!
//! [`TestDatabase::sqlite`] makes a temporary SQLite file; [`TestDatabase::postgres`] creates
//! a database with a random name on the server of a base URL (and drops leftovers of test
//! processes that died). Call [`TestDatabase::cleanup`] at the end of a test; a failed test
//! leaves its database behind for inspection, and a later run drops it.

use super::{Store, StoreError, StoreOptions, StoreResult};
use sqlx::Connection;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

const PG_PREFIX: &str = "rollout_test_";

/// A migrated database that exists for one test.
#[derive(Debug)]
pub struct TestDatabase {
    /// The store, connected and migrated.
    pub store: Store,
    /// The URL of the database (for a second connection, a second manager, …).
    pub url: String,
    cleanup: Cleanup,
}

#[derive(Debug)]
enum Cleanup {
    Sqlite(PathBuf),
    Postgres { admin_url: String, name: String },
}

fn db_err(context: &str) -> impl FnOnce(sqlx::Error) -> StoreError + '_ {
    move |source| StoreError::Database { context: context.to_owned(), source: Arc::new(source) }
}

impl TestDatabase {
    /// A migrated SQLite database in a new temporary file.
    pub async fn sqlite() -> StoreResult<TestDatabase> {
        let path = std::env::temp_dir().join(format!("rollout-test-{}.db", uuid::Uuid::new_v4().simple()));
        let url = format!("sqlite://{}", path.display());
        let store = Store::connect(&url).await?;
        store.migrate().await?;
        Ok(TestDatabase { store, url, cleanup: Cleanup::Sqlite(path) })
    }

    /// A migrated Postgres database with a fresh random name, created through `base_url`
    /// (any database of the server; its user must be allowed to create databases).
    pub async fn postgres(base_url: &str) -> StoreResult<TestDatabase> {
        TestDatabase::postgres_with(base_url, &StoreOptions::default()).await
    }

    /// [`TestDatabase::postgres`] with pool options.
    pub async fn postgres_with(base_url: &str, options: &StoreOptions) -> StoreResult<TestDatabase> {
        let admin_opts = sqlx::postgres::PgConnectOptions::from_str(base_url)
            .map_err(|e| StoreError::Connect { url: super::redact_url(base_url), source: Arc::new(e) })?;
        let mut admin = sqlx::PgConnection::connect_with(&admin_opts)
            .await
            .map_err(|e| StoreError::Connect { url: super::redact_url(base_url), source: Arc::new(e) })?;
        drop_stale(&mut admin).await;
        let name = format!("{PG_PREFIX}{}_{}", std::process::id(), uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await
            .map_err(db_err("create a test database"))?;
        let _ = admin.close().await;
        let url = with_database(base_url, &name);
        let store = Store::connect_with(&url, options).await?;
        store.migrate().await?;
        Ok(TestDatabase { store, url, cleanup: Cleanup::Postgres { admin_url: base_url.to_owned(), name } })
    }

    /// Close the store and remove the database (best effort).
    pub async fn cleanup(self) {
        self.store.close().await;
        match self.cleanup {
            Cleanup::Sqlite(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    let _ = std::fs::remove_file(PathBuf::from(p));
                }
            }
            Cleanup::Postgres { admin_url, name } => {
                if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .execute(&mut admin)
                        .await;
                    let _ = admin.close().await;
                }
            }
        }
    }
}

/// Drop the test databases of processes that no longer run.
async fn drop_stale(admin: &mut sqlx::PgConnection) {
    let Ok(rows) =
        sqlx::query_scalar::<_, String>("SELECT datname FROM pg_database WHERE datname LIKE 'rollout\\_test\\_%'")
            .fetch_all(&mut *admin)
            .await
    else {
        return;
    };
    for name in rows {
        let pid =
            name.strip_prefix(PG_PREFIX).and_then(|rest| rest.split('_').next()).and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).execute(&mut *admin).await;
        }
    }
}

/// `base_url` with its database replaced by `name`.
fn with_database(base_url: &str, name: &str) -> String {
    let (head, query) = match base_url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (base_url, None),
    };
    let after_scheme = head.find("://").map_or(0, |i| i + 3);
    let path_start = head.get(after_scheme..).and_then(|rest| rest.find('/')).map(|i| i + after_scheme);
    let base = match path_start {
        Some(i) => head.get(..i).unwrap_or(head),
        None => head,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_the_database_keeping_the_query() {
        assert_eq!(with_database("postgres://u@h:5432/test", "x"), "postgres://u@h:5432/x");
        assert_eq!(with_database("postgres://u@h:5432", "x"), "postgres://u@h:5432/x");
        assert_eq!(with_database("postgres://u@h/test?sslmode=disable", "x"), "postgres://u@h/x?sslmode=disable");
    }
}
