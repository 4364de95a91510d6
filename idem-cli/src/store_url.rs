//! `--store`: which database to open, checked before anything is opened.
//!
//! A SQLite URL must name an existing file: the store would otherwise create an empty
//! database at a mistyped path and report that it holds nothing. A Postgres URL may carry a
//! password, so no message repeats it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use idem_runtime::{PostgresStore, SqliteStore, Store};

use crate::failure::Failure;

/// How long connecting may take before the store counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

const FORMS: &str = "sqlite://PATH or postgres://USER:PASSWORD@HOST:PORT/DATABASE";

/// A store URL the tool can open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `sqlite://PATH` (or `sqlite:PATH`), with the file's path.
    Sqlite { url: String, path: PathBuf },
    /// `postgres://...` or `postgresql://...`, and whether it goes through a pooler in
    /// transaction mode (`--behind-pooler`).
    Postgres { url: String, behind_pooler: bool },
}

impl StoreUrl {
    /// Reads `--store` (and `--behind-pooler`, for Postgres only); a SQLite file must exist.
    pub fn parse(text: &str, behind_pooler: bool) -> Result<Self, Failure> {
        if let Some(rest) = text.strip_prefix("sqlite:") {
            if behind_pooler {
                return Err(Failure::usage(
                    "--behind-pooler is for a Postgres URL; a SQLite database has no pooler",
                ));
            }
            let rest = rest.strip_prefix("//").unwrap_or(rest);
            let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
            if path.is_empty() || path == ":memory:" || query.contains("mode=memory") {
                return Err(Failure::usage(
                    "--store: an in-memory SQLite database holds no records; \
                     give sqlite://PATH of the service's database file",
                ));
            }
            let path = PathBuf::from(path);
            check_file(&path)?;
            return Ok(StoreUrl::Sqlite {
                url: text.to_owned(),
                path,
            });
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(StoreUrl::Postgres {
                url: text.to_owned(),
                behind_pooler,
            });
        }
        let scheme = match text.split_once("://") {
            Some((scheme, _)) => format!("the scheme {scheme:?}"),
            None => "no scheme".to_owned(),
        };
        Err(Failure::usage(format!(
            "--store must be {FORMS}; this URL has {scheme}"
        )))
    }

    /// Opens the store on `table`. Nothing is created or migrated.
    pub async fn open(&self, table: &str) -> Result<Store, Failure> {
        let invalid_table = |e| Failure::usage(format!("--table: {e}"));
        match self {
            StoreUrl::Sqlite { url, path } => {
                let opened = tokio::time::timeout(CONNECT_TIMEOUT, SqliteStore::connect(url))
                    .await
                    .map_err(|_| {
                        Failure::store(format!(
                            "the SQLite database at {} did not open within {}s",
                            path.display(),
                            CONNECT_TIMEOUT.as_secs()
                        ))
                    })?
                    .map_err(|e| {
                        let doing =
                            format!("cannot open the SQLite database at {}", path.display());
                        Failure::from_store(&doing, &e)
                    })?;
                Ok(Store::new(opened.with_table(table).map_err(invalid_table)?))
            }
            StoreUrl::Postgres { url, behind_pooler } => {
                let connected = tokio::time::timeout(CONNECT_TIMEOUT, PostgresStore::connect(url))
                    .await
                    .map_err(|_| {
                        Failure::store(format!(
                            "the Postgres store did not answer within {}s",
                            CONNECT_TIMEOUT.as_secs()
                        ))
                    })?
                    .map_err(|e| {
                        let doing = "cannot connect to the Postgres store (is the server up, \
                                     and are the URL's host, port, user and database right?)";
                        Failure::from_store(doing, &e)
                    })?;
                let store = connected.with_table(table).map_err(invalid_table)?;
                Ok(Store::new(if *behind_pooler {
                    store.behind_pooler()
                } else {
                    store
                }))
            }
        }
    }
}

/// A SQLite path must be an existing file.
fn check_file(path: &Path) -> Result<(), Failure> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(_) => Err(Failure::usage(format!(
            "--store: {} is not a file; give sqlite://PATH of the service's database file",
            path.display()
        ))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Err(Failure::usage(format!(
            "--store: no SQLite database at {} (idem opens existing databases only and \
                 creates none; check the path and the working folder)",
            path.display()
        ))),
        Err(error) => Err(Failure::usage(format!(
            "--store: cannot read {}: {error}",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::Kind;

    fn refused(text: &str) -> String {
        refused_with(text, false)
    }

    fn refused_with(text: &str, behind_pooler: bool) -> String {
        match StoreUrl::parse(text, behind_pooler) {
            Err(failure) => {
                assert_eq!(failure.kind(), Kind::Usage, "{text}");
                failure.message().to_owned()
            }
            Ok(url) => panic!("{text} was accepted as {url:?}"),
        }
    }

    #[test]
    fn postgres_urls_are_taken_as_they_are() {
        for text in [
            "postgres://u:p@h/db",
            "postgresql://h:5433/db?sslmode=disable",
        ] {
            for behind_pooler in [false, true] {
                assert_eq!(
                    StoreUrl::parse(text, behind_pooler).ok(),
                    Some(StoreUrl::Postgres {
                        url: text.to_owned(),
                        behind_pooler
                    })
                );
            }
        }
    }

    #[test]
    fn a_pooler_is_for_postgres_only() {
        let file = std::env::current_exe()
            .ok()
            .and_then(|p| p.to_str().map(str::to_owned));
        if let Some(file) = file {
            let message = refused_with(&format!("sqlite://{file}"), true);
            assert!(
                message.contains("--behind-pooler is for a Postgres URL"),
                "{message}"
            );
        }
    }

    #[test]
    fn other_schemes_are_refused_without_repeating_the_url() {
        let message = refused("mysql://root:hunter2@db/app");
        assert!(message.contains("\"mysql\""), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
        assert!(refused("payments.db").contains("no scheme"));
    }

    #[test]
    fn sqlite_needs_an_existing_file() {
        assert!(refused("sqlite::memory:").contains("in-memory"));
        assert!(refused("sqlite://").contains("in-memory"));
        let missing = refused("sqlite://no/such/idem-cli-test.db");
        assert!(missing.contains("no SQLite database at no/such/idem-cli-test.db"));
        assert!(refused("sqlite://.").contains("not a file"));
        let file = std::env::current_exe()
            .ok()
            .and_then(|p| p.to_str().map(str::to_owned));
        if let Some(file) = file {
            let url = format!("sqlite://{file}?mode=rw");
            assert!(matches!(
                StoreUrl::parse(&url, false),
                Ok(StoreUrl::Sqlite { .. })
            ));
        }
    }
}
