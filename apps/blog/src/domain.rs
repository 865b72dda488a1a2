//! The blog's domain: one service per resource, shared by the REST API and the gateways, so
//! that a rule is written once. A [`DomainError`] becomes the REST API's error (404 with the
//! entity's message) or a gateway's exception (the same message), whichever asked.

use serde::Serialize;
use validator::ValidationError;
use wsgate::{Server, WsError, WsException};

use crate::error::AppError;
use crate::models::{Comment, Entry, User};
use crate::store::{Author, Store, StoreError};

/// What the blog holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    /// A user.
    User,
    /// An entry.
    Entry,
    /// A comment of an entry.
    Comment,
}

impl Entity {
    /// The message when it does not exist: `Entry not found.`, over REST and gateways alike.
    pub fn not_found(self) -> &'static str {
        match self {
            Self::User => "User not found.",
            Self::Entry => "Entry not found.",
            Self::Comment => "Comment not found.",
        }
    }
}

/// Why a service could not do what was asked. Deliberately not a `std::error::Error`: every
/// conversion says how the caller's side shows it.
#[derive(Debug)]
pub enum DomainError {
    /// It does not exist.
    NotFound(Entity),
    /// The store failed (the detail is logged, never sent).
    Store(StoreError),
}

impl From<StoreError> for DomainError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl From<DomainError> for AppError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::NotFound(entity) => Self::NotFound(entity.not_found().into()),
            DomainError::Store(e) => e.into(),
        }
    }
}

impl From<DomainError> for WsError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::NotFound(entity) => WsException::new(entity.not_found()).into(),
            DomainError::Store(e) => e.into(),
        }
    }
}

/// The rule of a comment's body, wherever a comment is written (REST `POST`/`PUT`, the
/// `createComment` gateway event).
pub fn comment_body(body: &str) -> Result<(), ValidationError> {
    let length = body.chars().count();
    if (1..=10_000).contains(&length) {
        return Ok(());
    }
    let mut error = ValidationError::new("length");
    error.message = Some("body must be between 1 and 10000 characters long.".into());
    Err(error)
}

/// Users.
#[derive(Clone, Debug)]
pub struct Users {
    store: Store,
}

impl Users {
    /// Users over this store.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// User `id`.
    pub async fn find(&self, id: i64) -> Result<User, DomainError> {
        self.store.user(id).await?.ok_or(DomainError::NotFound(Entity::User))
    }
}

/// Entries.
#[derive(Clone, Debug)]
pub struct Entries {
    store: Store,
}

impl Entries {
    /// Entries over this store.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Entry `id`.
    pub async fn find(&self, id: i64) -> Result<Entry, DomainError> {
        self.store.entry(id).await?.ok_or(DomainError::NotFound(Entity::Entry))
    }

    /// A page of entries, newest first.
    pub async fn page(&self, limit: i64, offset: i64) -> Result<Vec<Entry>, DomainError> {
        Ok(self.store.entries(limit, offset).await?)
    }

    /// The names of who wrote entry `id` and its comments (never their e-mail addresses).
    pub async fn authors(&self, id: i64) -> Result<Vec<Author>, DomainError> {
        self.find(id).await?;
        Ok(self.store.entry_authors(id).await?)
    }
}

/// The event everyone in an entry's room receives when a comment is created.
pub const COMMENT_CREATED: &str = "commentCreated";
/// The event everyone in an entry's room receives when a comment is changed.
pub const COMMENT_UPDATED: &str = "commentUpdated";
/// The event everyone in an entry's room receives when a comment is deleted.
pub const COMMENT_DELETED: &str = "commentDeleted";

/// The room of the connections subscribed to an entry.
pub fn entry_room(entry_id: i64) -> String {
    format!("entry:{entry_id}")
}

/// What `commentDeleted` carries: which comment of which entry is gone.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeletedComment {
    /// The deleted comment's id.
    pub id: i64,
    /// The entry it was on.
    pub entry_id: i64,
}

/// Comments, and the live pushes to their entry's room: every change is emitted there,
/// however it was made.
#[derive(Clone, Debug)]
pub struct Comments {
    store: Store,
    server: Server,
}

impl Comments {
    /// Comments over this store, pushed through this server.
    pub fn new(store: Store, server: Server) -> Self {
        Self { store, server }
    }

    /// The comments of entry `entry_id`, oldest first (a page of them, or all); the entry must
    /// exist.
    pub async fn of_entry(
        &self,
        entry_id: i64,
        page: Option<(i64, i64)>,
    ) -> Result<Vec<Comment>, DomainError> {
        if self.store.entry(entry_id).await?.is_none() {
            return Err(DomainError::NotFound(Entity::Entry));
        }
        Ok(match page {
            Some((limit, offset)) => self.store.comments_page(entry_id, limit, offset).await?,
            None => self.store.comments(entry_id).await?,
        })
    }

    /// Comment `id` of entry `entry_id`, or what is missing: the entry, or the comment on it.
    pub async fn find(&self, entry_id: i64, id: i64) -> Result<Comment, DomainError> {
        if let Some(comment) = self.store.comment(entry_id, id).await? {
            return Ok(comment);
        }
        // Only a miss pays for the second lookup.
        match self.store.entry(entry_id).await? {
            None => Err(DomainError::NotFound(Entity::Entry)),
            Some(_) => Err(DomainError::NotFound(Entity::Comment)),
        }
    }

    /// A new comment by `user_id` (its body already validated); the room hears of it.
    pub async fn create(
        &self,
        entry_id: i64,
        user_id: i64,
        body: &str,
    ) -> Result<Comment, DomainError> {
        let comment = self.store.create_comment(entry_id, user_id, body).await?;
        let comment = comment.ok_or(DomainError::NotFound(Entity::Entry))?;
        self.announce(entry_id, comment.id, COMMENT_CREATED, &comment);
        Ok(comment)
    }

    /// Replaces a comment's body; the room hears of it.
    pub async fn update(&self, entry_id: i64, id: i64, body: &str) -> Result<Comment, DomainError> {
        let comment = self.store.update_comment(entry_id, id, body).await?;
        let comment = comment.ok_or(DomainError::NotFound(Entity::Comment))?;
        self.announce(entry_id, id, COMMENT_UPDATED, &comment);
        Ok(comment)
    }

    /// Deletes a comment; the room hears of it.
    pub async fn delete(&self, entry_id: i64, id: i64) -> Result<(), DomainError> {
        if !self.store.delete_comment(entry_id, id).await? {
            return Err(DomainError::NotFound(Entity::Comment));
        }
        self.announce(entry_id, id, COMMENT_DELETED, &DeletedComment { id, entry_id });
        Ok(())
    }

    /// Emits `event` to the entry's room: the one way every comment push goes out. Nobody
    /// listening is fine; a failure to serialize is logged, the change is stored either way.
    fn announce<T: Serialize + ?Sized>(
        &self,
        entry_id: i64,
        comment_id: i64,
        event: &'static str,
        payload: &T,
    ) {
        match self.server.to(entry_room(entry_id)).emit(event, payload) {
            Ok(n) => tracing::debug!(comment.id = comment_id, event, recipients = n, "announced"),
            Err(e) => tracing::warn!(comment.id = comment_id, event, error = %e, "not announced"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_comment_body_rule() {
        assert!(comment_body("x").is_ok());
        assert!(comment_body(&"é".repeat(10_000)).is_ok(), "characters, not bytes");
        for bad in [String::new(), "x".repeat(10_001)] {
            let error = comment_body(&bad).unwrap_err();
            assert_eq!(
                error.message.as_deref(),
                Some("body must be between 1 and 10000 characters long.")
            );
        }
    }
}
