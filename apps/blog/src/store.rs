//! Reading and writing users, entries and comments. The REST handlers and the gateways both
//! go through [`Store`], so that both see one set of rules.

use std::fmt;

use serde::Serialize;
use sqlx::AnyPool;

pub use crate::models::{Comment, Entry, Page, Timestamp, User};

const USER_COLUMNS: &str = "id, email, first_name, last_name, created_at";
const ENTRY_COLUMNS: &str = "id, title, content, user_id, created_at, updated_at";
const COMMENT_COLUMNS: &str = "id, body, entry_id, user_id, created_at, updated_at";

/// Someone who wrote an entry or a comment, as every reader may see them: the name, never the
/// e-mail address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Author {
    /// The user's id (a comment's or an entry's `userId`).
    pub id: i64,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another user already has this e-mail address.
    #[error("Email already registered.")]
    EmailTaken,
    /// The database failed or could not be reached.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// What [`Store::create_user`] stores.
#[derive(Clone, Copy)]
pub struct NewUser<'a> {
    /// E-mail address, as it will be looked up (the caller normalises it).
    pub email: &'a str,
    /// Argon2 PHC string of the password.
    pub password_hash: &'a str,
    /// Given name.
    pub first_name: &'a str,
    /// Family name.
    pub last_name: &'a str,
}

impl fmt::Debug for NewUser<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewUser").field("email", &self.email).finish_non_exhaustive()
    }
}

/// A user with the password hash, for checking a login. Never sent to a client.
#[derive(Clone, sqlx::FromRow)]
pub struct UserCredentials {
    /// The user.
    #[sqlx(flatten)]
    pub user: User,
    /// Argon2 PHC string of the password.
    pub password_hash: String,
}

impl fmt::Debug for UserCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserCredentials").field("user", &self.user).finish_non_exhaustive()
    }
}

/// The blog's data over a connection pool (SQLite or PostgreSQL). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
}

impl Store {
    /// A store over a migrated pool.
    pub fn new(pool: AnyPool) -> Self {
        Self { pool }
    }

    /// The underlying pool.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Checks that the database answers (`SELECT 1`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Registers a user. [`StoreError::EmailTaken`] when the e-mail address is in use.
    pub async fn create_user(&self, new: NewUser<'_>) -> Result<User, StoreError> {
        let sql = format!(
            "INSERT INTO users (email, password_hash, first_name, last_name, created_at) \
             VALUES ($1, $2, $3, $4, $5) RETURNING {USER_COLUMNS}"
        );
        sqlx::query_as::<_, User>(&sql)
            .bind(new.email)
            .bind(new.password_hash)
            .bind(new.first_name)
            .bind(new.last_name)
            .bind(Timestamp::now().to_string())
            .fetch_one(&self.pool)
            .await
            .map_err(|e| {
                // `email` is the table's only unique column besides the generated id.
                match e.as_database_error().is_some_and(|d| d.is_unique_violation()) {
                    true => StoreError::EmailTaken,
                    false => StoreError::Database(e),
                }
            })
    }

    /// The user with this e-mail address (exact match), with the password hash.
    pub async fn user_by_email(&self, email: &str) -> Result<Option<UserCredentials>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS}, password_hash FROM users WHERE email = $1");
        Ok(sqlx::query_as(&sql).bind(email).fetch_optional(&self.pool).await?)
    }

    /// The user with this id.
    pub async fn user(&self, id: i64) -> Result<Option<User>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        Ok(sqlx::query_as(&sql).bind(id).fetch_optional(&self.pool).await?)
    }

    /// Writes an entry by `user_id`.
    pub async fn create_entry(
        &self,
        user_id: i64,
        title: &str,
        content: &str,
    ) -> Result<Entry, StoreError> {
        let sql = format!(
            "INSERT INTO entries (title, content, user_id, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4) RETURNING {ENTRY_COLUMNS}"
        );
        let now = Timestamp::now().to_string();
        let query = sqlx::query_as(&sql).bind(title).bind(content).bind(user_id).bind(now);
        Ok(query.fetch_one(&self.pool).await?)
    }

    /// The entry with this id.
    pub async fn entry(&self, id: i64) -> Result<Option<Entry>, StoreError> {
        let sql = format!("SELECT {ENTRY_COLUMNS} FROM entries WHERE id = $1");
        Ok(sqlx::query_as(&sql).bind(id).fetch_optional(&self.pool).await?)
    }

    /// Up to `limit` entries after skipping `offset`, newest first (by id). Negative numbers
    /// count as 0; the REST API checks them against [`Page`] first.
    pub async fn entries(&self, limit: i64, offset: i64) -> Result<Vec<Entry>, StoreError> {
        let sql =
            format!("SELECT {ENTRY_COLUMNS} FROM entries ORDER BY id DESC LIMIT $1 OFFSET $2");
        let query = sqlx::query_as(&sql).bind(limit.max(0)).bind(offset.max(0));
        Ok(query.fetch_all(&self.pool).await?)
    }

    /// The authors of entry `entry_id` and of its comments, by id; empty when there is no
    /// such entry.
    pub async fn entry_authors(&self, entry_id: i64) -> Result<Vec<Author>, StoreError> {
        let sql = "SELECT id, first_name, last_name FROM users WHERE id IN \
                   (SELECT user_id FROM entries WHERE id = $1 \
                    UNION SELECT user_id FROM comments WHERE entry_id = $1) ORDER BY id";
        Ok(sqlx::query_as(sql).bind(entry_id).fetch_all(&self.pool).await?)
    }

    /// Replaces an entry's title and content and sets `updated_at` to now; `None` when there
    /// is no such entry. Who may do so is the caller's rule.
    pub async fn update_entry(
        &self,
        id: i64,
        title: &str,
        content: &str,
    ) -> Result<Option<Entry>, StoreError> {
        let sql = format!(
            "UPDATE entries SET title = $1, content = $2, updated_at = $3 WHERE id = $4 \
             RETURNING {ENTRY_COLUMNS}"
        );
        let now = Timestamp::now().to_string();
        let query = sqlx::query_as(&sql).bind(title).bind(content).bind(now).bind(id);
        Ok(query.fetch_optional(&self.pool).await?)
    }

    /// Deletes an entry and, by the schema's `ON DELETE CASCADE`, its comments, in one
    /// statement; `false` when there was no such entry.
    pub async fn delete_entry(&self, id: i64) -> Result<bool, StoreError> {
        // SQLite enforces foreign keys (and so cascades) only with `PRAGMA foreign_keys = ON`
        // on each connection, which sqlx's SQLite options set by default; a test guards it.
        let done = sqlx::query("DELETE FROM entries WHERE id = $1").bind(id).execute(&self.pool);
        Ok(done.await?.rows_affected() > 0)
    }

    /// Writes a comment by `user_id` on entry `entry_id`; `None` when there is no such entry.
    pub async fn create_comment(
        &self,
        entry_id: i64,
        user_id: i64,
        body: &str,
    ) -> Result<Option<Comment>, StoreError> {
        // One statement checks and inserts, so that a missing entry is an answer, not a
        // foreign-key error.
        let sql = format!(
            "INSERT INTO comments (body, entry_id, user_id, created_at, updated_at) \
             SELECT $1, $2, $3, $4, $4 WHERE EXISTS (SELECT 1 FROM entries WHERE id = $2) \
             RETURNING {COMMENT_COLUMNS}"
        );
        let now = Timestamp::now().to_string();
        // In an explicit transaction, although it is one statement: if the server goes away
        // while the insert waits (on a lock, say), the database rolls it back instead of
        // committing a comment whose author was never told.
        let mut tx = self.pool.begin().await?;
        let query = sqlx::query_as(&sql).bind(body).bind(entry_id).bind(user_id).bind(now);
        let comment = query.fetch_optional(&mut *tx).await?;
        tx.commit().await?;
        Ok(comment)
    }

    /// All the comments on entry `entry_id`, oldest first (by id).
    pub async fn comments(&self, entry_id: i64) -> Result<Vec<Comment>, StoreError> {
        self.comments_page(entry_id, i64::MAX, 0).await
    }

    /// Up to `limit` comments on entry `entry_id` after skipping `offset`, oldest first (by
    /// id). Negative numbers count as 0.
    pub async fn comments_page(
        &self,
        entry_id: i64,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<Comment>, StoreError> {
        let sql = format!(
            "SELECT {COMMENT_COLUMNS} FROM comments WHERE entry_id = $1 ORDER BY id \
             LIMIT $2 OFFSET $3"
        );
        let query = sqlx::query_as(&sql).bind(entry_id).bind(limit.max(0)).bind(offset.max(0));
        Ok(query.fetch_all(&self.pool).await?)
    }

    /// The comment `comment_id` if it belongs to entry `entry_id`.
    pub async fn comment(
        &self,
        entry_id: i64,
        comment_id: i64,
    ) -> Result<Option<Comment>, StoreError> {
        let sql = format!("SELECT {COMMENT_COLUMNS} FROM comments WHERE entry_id = $1 AND id = $2");
        Ok(sqlx::query_as(&sql).bind(entry_id).bind(comment_id).fetch_optional(&self.pool).await?)
    }

    /// Replaces the body of comment `comment_id` on entry `entry_id` and sets `updated_at`
    /// to now; `None` when there is no such comment on that entry. Who may do so is the
    /// caller's rule.
    pub async fn update_comment(
        &self,
        entry_id: i64,
        comment_id: i64,
        body: &str,
    ) -> Result<Option<Comment>, StoreError> {
        let sql = format!(
            "UPDATE comments SET body = $1, updated_at = $2 WHERE entry_id = $3 AND id = $4 \
             RETURNING {COMMENT_COLUMNS}"
        );
        let now = Timestamp::now().to_string();
        let query = sqlx::query_as(&sql).bind(body).bind(now).bind(entry_id).bind(comment_id);
        Ok(query.fetch_optional(&self.pool).await?)
    }

    /// Deletes comment `comment_id` on entry `entry_id`; `false` when there was no such
    /// comment on that entry.
    pub async fn delete_comment(&self, entry_id: i64, comment_id: i64) -> Result<bool, StoreError> {
        let sql = "DELETE FROM comments WHERE entry_id = $1 AND id = $2";
        let done = sqlx::query(sql).bind(entry_id).bind(comment_id).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> Store {
        let url = "sqlite::memory:";
        let pool = crate::db::connect(url).await.ok();
        let pool = pool.unwrap_or_else(|| panic!("in-memory SQLite"));
        let migrated = crate::db::migrate(&pool, url).await;
        assert!(migrated.is_ok(), "{migrated:?}");
        Store::new(pool)
    }

    fn ada() -> NewUser<'static> {
        NewUser {
            email: "ada@example.com",
            password_hash: "$argon2id$not-a-real-hash",
            first_name: "Ada",
            last_name: "Lovelace",
        }
    }

    #[tokio::test]
    async fn users_entries_and_comments_round_trip() -> Result<(), StoreError> {
        let store = store().await;
        store.ping().await?;
        let user = store.create_user(ada()).await?;
        assert_eq!((user.email.as_str(), user.first_name.as_str()), ("ada@example.com", "Ada"));
        assert!(matches!(store.create_user(ada()).await, Err(StoreError::EmailTaken)));

        let creds = store.user_by_email("ada@example.com").await?;
        assert_eq!(creds.as_ref().map(|c| &c.user), Some(&user));
        assert_eq!(creds.map(|c| c.password_hash).as_deref(), Some("$argon2id$not-a-real-hash"));
        assert!(store.user_by_email("nobody@example.com").await?.is_none());
        assert_eq!(store.user(user.id).await?, Some(user.clone()));
        assert_eq!(store.user(user.id + 1).await?, None);

        let entry = store.create_entry(user.id, "Title", "Content").await?;
        assert_eq!((entry.user_id, entry.created_at), (user.id, entry.updated_at));
        assert_eq!(store.entry(entry.id).await?, Some(entry.clone()));
        assert_eq!(store.entry(entry.id + 1).await?, None);

        assert_eq!(store.create_comment(entry.id + 1, user.id, "lost").await?, None);
        let first = store.create_comment(entry.id, user.id, "first").await?;
        let second = store.create_comment(entry.id, user.id, "second").await?;
        let (Some(first), Some(second)) = (first, second) else { panic!("comments not created") };
        assert_eq!(first.entry_id, entry.id);
        assert_eq!(store.comments(entry.id).await?, vec![first.clone(), second]);
        assert_eq!(store.comments(entry.id + 1).await?, vec![]);
        assert_eq!(store.comment(entry.id, first.id).await?, Some(first.clone()));
        assert_eq!(store.comment(entry.id + 1, first.id).await?, None);
        Ok(())
    }

    #[tokio::test]
    async fn pages_updates_and_deletes() -> Result<(), StoreError> {
        let store = store().await;
        let user = store.create_user(ada()).await?;
        let mut entries = Vec::new();
        for title in ["one", "two", "three"] {
            entries.push(store.create_entry(user.id, title, "text").await?);
        }
        let titles = |page: Vec<Entry>| page.into_iter().map(|e| e.title).collect::<Vec<_>>();
        assert_eq!(titles(store.entries(2, 0).await?), ["three", "two"]);
        assert_eq!(titles(store.entries(2, 2).await?), ["one"]);
        assert_eq!(titles(store.entries(2, 3).await?), Vec::<String>::new());
        assert_eq!(titles(store.entries(-1, -1).await?), Vec::<String>::new());

        let entry = &entries[0];
        let updated = store.update_entry(entry.id, "One", "new text").await?;
        let Some(updated) = updated else { panic!("entry not updated") };
        assert_eq!((updated.title.as_str(), updated.content.as_str()), ("One", "new text"));
        assert_eq!((updated.id, updated.created_at), (entry.id, entry.created_at));
        assert!(updated.updated_at >= entry.updated_at);
        assert_eq!(store.entry(entry.id).await?, Some(updated));
        assert_eq!(store.update_entry(entries[2].id + 1, "x", "y").await?, None);

        let mut comments = Vec::new();
        for body in ["a", "b", "c"] {
            let comment = store.create_comment(entry.id, user.id, body).await?;
            comments.extend(comment);
        }
        assert_eq!(store.comments_page(entry.id, 2, 1).await?, comments[1..].to_vec());
        assert_eq!(store.comments_page(entry.id, 1, 0).await?, comments[..1].to_vec());
        let changed = store.update_comment(entry.id, comments[0].id, "A").await?;
        assert_eq!(changed.as_ref().map(|c| c.body.as_str()), Some("A"));
        assert_eq!(store.update_comment(entries[1].id, comments[0].id, "A").await?, None);
        assert!(!store.delete_comment(entries[1].id, comments[0].id).await?);
        assert!(store.delete_comment(entry.id, comments[0].id).await?);
        assert!(!store.delete_comment(entry.id, comments[0].id).await?);
        assert_eq!(store.comments(entry.id).await?, comments[1..].to_vec());

        assert!(store.delete_entry(entry.id).await?);
        assert!(!store.delete_entry(entry.id).await?);
        assert_eq!(store.entry(entry.id).await?, None);
        // The comments went with their entry (ON DELETE CASCADE).
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM comments WHERE entry_id = $1")
            .bind(entry.id)
            .fetch_one(store.pool())
            .await?;
        assert_eq!(left, 0);
        assert_eq!(titles(store.entries(10, 0).await?), ["three", "two"]);
        Ok(())
    }

    #[tokio::test]
    async fn an_entrys_authors_are_its_writer_and_its_commenters_once_each()
    -> Result<(), StoreError> {
        let store = store().await;
        let grace = NewUser { email: "grace@example.com", first_name: "Grace", ..ada() };
        let silent = NewUser { email: "silent@example.com", first_name: "Silent", ..ada() };
        let ada = store.create_user(ada()).await?;
        let grace = store.create_user(grace).await?;
        store.create_user(silent).await?;
        let entry = store.create_entry(ada.id, "Title", "Content").await?;
        let author = |u: &User| Author {
            id: u.id,
            first_name: u.first_name.clone(),
            last_name: u.last_name.clone(),
        };
        assert_eq!(store.entry_authors(entry.id).await?, vec![author(&ada)]);
        for (user, body) in [(&grace, "one"), (&grace, "two"), (&ada, "three")] {
            store.create_comment(entry.id, user.id, body).await?;
        }
        // Who never wrote on it is not among them.
        assert_eq!(store.entry_authors(entry.id).await?, vec![author(&ada), author(&grace)]);
        assert_eq!(store.entry_authors(entry.id + 1).await?, vec![]);
        Ok(())
    }

    #[tokio::test]
    async fn sqlite_connections_enforce_foreign_keys() -> Result<(), StoreError> {
        // Deleting an entry relies on ON DELETE CASCADE, which SQLite applies only on
        // connections with `PRAGMA foreign_keys = ON`: every connection of a file pool.
        let dir = tempfile::tempdir().map_err(|e| StoreError::Database(e.into()))?;
        let url = format!("sqlite://{}", dir.path().join("fk.db").display());
        let pool = crate::db::connect(&url).await.ok();
        let pool = pool.unwrap_or_else(|| panic!("SQLite file"));
        let mut connections = Vec::new();
        for _ in 0..3 {
            connections.push(pool.acquire().await?);
        }
        for conn in &mut connections {
            let on: i64 = sqlx::query_scalar("PRAGMA foreign_keys").fetch_one(&mut **conn).await?;
            assert_eq!(on, 1);
        }
        Ok(())
    }
}
