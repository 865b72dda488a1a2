//! The database: one sqlx `AnyPool` over SQLite or PostgreSQL, chosen by the URL's scheme,
//! and the migrations of each dialect (`migrations/sqlite`, `migrations/postgres`).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, bail};
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::{MigrateDatabase, Migrator};
use sqlx::sqlite::SqliteConnectOptions;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// Where secrets and files live when the database is not a local SQLite file.
const DEFAULT_DATA_DIR: &str = "data";

/// The SQL dialect of a database URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `sqlite:` URLs.
    Sqlite,
    /// `postgres:` and `postgresql:` URLs.
    Postgres,
}

impl Dialect {
    /// The dialect named by the URL's scheme.
    pub fn of(url: &str) -> anyhow::Result<Self> {
        let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("sqlite") => Ok(Self::Sqlite),
            Some("postgres" | "postgresql") => Ok(Self::Postgres),
            _ => bail!("unsupported DATABASE_URL: expected sqlite://… or postgres://…"),
        }
    }

    /// The migrations written in this dialect.
    pub fn migrator(self) -> &'static Migrator {
        match self {
            Self::Sqlite => &SQLITE_MIGRATIONS,
            Self::Postgres => &POSTGRES_MIGRATIONS,
        }
    }
}

/// Creates the PostgreSQL database of `url` if it does not exist (the server must let the user
/// create databases), as the SQLite file is created: a first run needs no manual step.
async fn create_postgres_database(url: &str) -> anyhow::Result<()> {
    let exists = sqlx::Any::database_exists(url).await.context("connecting to PostgreSQL")?;
    if !exists {
        if let Err(e) = sqlx::Any::create_database(url).await {
            // Another instance starting at the same moment may have won the race.
            if !sqlx::Any::database_exists(url).await.unwrap_or(false) {
                return Err(e).context("creating the PostgreSQL database");
            }
        } else {
            tracing::info!("created the PostgreSQL database");
        }
    }
    Ok(())
}

/// Opens a pool on `url`. A PostgreSQL database, or a SQLite file and its directory, are
/// created when missing; a SQLite file is switched to WAL mode so that readers don't wait for
/// the writer.
pub async fn connect(url: &str) -> anyhow::Result<AnyPool> {
    sqlx::any::install_default_drivers();
    let dialect = Dialect::of(url)?;
    // A database that does not answer fails requests after 5 s (`Internal server error`)
    // instead of keeping them waiting.
    let mut options = AnyPoolOptions::new().acquire_timeout(std::time::Duration::from_secs(5));
    let mut sqlite_file = false;
    if dialect == Dialect::Sqlite {
        if is_sqlite_memory(url) {
            // The Any driver parses the URL for every connection, and each parse names a new
            // in-memory database: one connection, kept forever, is the only way to keep one.
            options = options.max_connections(1).idle_timeout(None).max_lifetime(None);
        } else {
            sqlite_file = true;
            let path = sqlite_path(url)?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating database directory {}", dir.display()))?;
            }
            if !sqlx::Any::database_exists(url).await? {
                sqlx::Any::create_database(url)
                    .await
                    .with_context(|| format!("creating SQLite database {}", path.display()))?;
                tracing::info!(path = %path.display(), "created SQLite database");
            }
        }
    }
    if dialect == Dialect::Postgres {
        create_postgres_database(url).await?;
    }
    let pool = options.connect(url).await.context("connecting to the database")?;
    if sqlite_file {
        // Persistent in the file: set once, every later connection sees it.
        sqlx::query("PRAGMA journal_mode = WAL").execute(&pool).await?;
    }
    Ok(pool)
}

/// Applies the migrations of `url`'s dialect that `pool` has not seen yet.
pub async fn migrate(pool: &AnyPool, url: &str) -> anyhow::Result<()> {
    Dialect::of(url)?.migrator().run(pool).await.context("applying database migrations")?;
    Ok(())
}

/// The directory for the app's own files (the generated JWT secret): the SQLite file's
/// directory, or `./data` for an in-memory or PostgreSQL database.
pub fn data_dir(url: &str) -> PathBuf {
    let sqlite_dir = match Dialect::of(url) {
        Ok(Dialect::Sqlite) if !is_sqlite_memory(url) => {
            sqlite_path(url).ok().and_then(|p| p.parent().map(Path::to_path_buf))
        }
        _ => None,
    };
    match sqlite_dir {
        Some(dir) if dir.as_os_str().is_empty() => PathBuf::from("."),
        Some(dir) => dir,
        None => PathBuf::from(DEFAULT_DATA_DIR),
    }
}

fn is_sqlite_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

fn sqlite_path(url: &str) -> anyhow::Result<PathBuf> {
    let options = SqliteConnectOptions::from_str(url).context("parsing the SQLite URL")?;
    Ok(options.get_filename().to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialect_by_scheme() {
        assert_eq!(Dialect::of("sqlite://data/blog.db").ok(), Some(Dialect::Sqlite));
        assert_eq!(Dialect::of("sqlite::memory:").ok(), Some(Dialect::Sqlite));
        assert_eq!(Dialect::of("postgres://u@h/db").ok(), Some(Dialect::Postgres));
        assert_eq!(Dialect::of("postgresql://u@h/db").ok(), Some(Dialect::Postgres));
        assert!(Dialect::of("mysql://u@h/db").is_err());
        assert!(Dialect::of("blog.db").is_err());
    }

    #[test]
    fn data_dir_is_beside_the_sqlite_file() {
        assert_eq!(data_dir("sqlite://data/blog.db"), PathBuf::from("data"));
        assert_eq!(data_dir("sqlite:///var/lib/blog/blog.db"), PathBuf::from("/var/lib/blog"));
        assert_eq!(data_dir("sqlite://blog.db"), PathBuf::from("."));
        assert_eq!(data_dir("sqlite::memory:"), PathBuf::from("data"));
        assert_eq!(data_dir("postgres://u@h/db"), PathBuf::from("data"));
    }

    #[test]
    fn both_dialects_have_the_same_migrations() {
        let versions = |m: &Migrator| {
            m.iter().map(|m| (m.version, m.description.to_string())).collect::<Vec<_>>()
        };
        assert!(SQLITE_MIGRATIONS.iter().next().is_some());
        assert_eq!(versions(&SQLITE_MIGRATIONS), versions(&POSTGRES_MIGRATIONS));
    }
}
