//! The blog's gateways, served over every transport the server mounts: the chapter's
//! `showUser`, `indexComment` and `showComment`; `indexEntry` and `showEntry`;
//! `createComment`; and `subscribeEntry` / `unsubscribeEntry` for the live `commentCreated`,
//! `commentUpdated` and `commentDeleted` pushes of an entry's room.
//!
//! Every connection carries the [`User`] that [`auth_middleware`] attached at the handshake.
//! Data fields are optional in the payload types so that a missing field gets the chapter's
//! own message (`Missing entry id.`), while a field of the wrong type gets the extractor's
//! message naming it (`Invalid entryId: …`).

use serde::Deserialize;
use serde_json::{Value, json};
use validator::Validate;
use wsgate::{
    Ack, App, BuildError, Claims, Connection, Data, Ext, Guard, JwtAuth, JwtKeys, MessageContext,
    WsError, WsException, WsResponse, gateway,
};

use crate::AppState;
use crate::comments::{announce, entry_room};
use crate::models::{Comment, Entry, Page, User};
use crate::store::Store;

/// The blog's gateways behind [`auth_middleware`], sharing the state's server handle.
pub async fn app(state: &AppState) -> Result<App, BuildError> {
    App::builder()
        .server(state.server.clone())
        .config(state.gateway_config.clone())
        .observer(state.metrics.clone())
        .middleware(state.origins.clone())
        .middleware(auth_middleware(state.jwt.clone(), state.store.clone()))
        .gateway(UserGateway::new(state.store.clone()))
        .gateway(EntryGateway::new(state.store.clone()))
        .gateway(CommentGateway::new(state.clone()))
        .build()
        .await
}

/// The connection middleware: a valid token of an existing user, attached as [`User`].
pub fn auth_middleware(keys: JwtKeys, store: Store) -> impl wsgate::ConnectMiddleware {
    JwtAuth::new(keys, move |claims: Claims| {
        let store = store.clone();
        async move {
            match claims.sub.parse::<i64>() {
                Ok(id) => store.user(id).await,
                // A token signed with our key but not for a user id names nobody.
                Err(_) => Ok(None),
            }
        }
    })
}

/// `showUser {userId}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserQuery {
    user_id: Option<i64>,
}

/// `showEntry {entryId}`, `indexComment {entryId}`, `showComment {entryId, commentId}`,
/// `subscribeEntry {entryId}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryQuery {
    entry_id: Option<i64>,
    comment_id: Option<i64>,
}

impl EntryQuery {
    fn entry_id(&self) -> Result<i64, WsException> {
        self.entry_id.ok_or_else(|| WsException::new("Missing entry id."))
    }

    fn comment_id(&self) -> Result<i64, WsException> {
        self.comment_id.ok_or_else(|| WsException::new("Missing comment id."))
    }
}

/// `createComment {entryId, body}`.
#[derive(Debug, Deserialize, Validate)]
#[serde(rename_all = "camelCase")]
pub struct NewComment {
    entry_id: Option<i64>,
    #[validate(length(
        min = 1,
        max = 10_000,
        message = "body must be between 1 and 10000 characters long."
    ))]
    #[serde(default)]
    body: String,
}

/// Lets a message through only if its `userId`, when it has one, is the connection's user:
/// "the user can't access the data from another user".
#[derive(Debug, Clone, Copy)]
pub struct OwnUserOnly;

impl Guard for OwnUserOnly {
    async fn can_activate(&self, ctx: &MessageContext) -> Result<(), WsError> {
        let asked =
            serde_json::from_str::<UserQuery>(ctx.data().get()).ok().and_then(|q| q.user_id);
        match (asked, ctx.extension::<User>()) {
            (Some(id), Some(me)) if id != me.id => Err(WsException::new("Forbidden.").into()),
            _ => Ok(()),
        }
    }
}

/// Users: a user can read their own record only.
pub struct UserGateway {
    store: Store,
}

impl UserGateway {
    /// The gateway over this store.
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

#[gateway]
impl UserGateway {
    #[subscribe_message("showUser")]
    #[use_guards(OwnUserOnly)]
    async fn show_user(&self, Data(query): Data<UserQuery>) -> Result<WsResponse<User>, WsError> {
        let user_id = query.user_id.ok_or_else(|| WsException::new("Missing user id."))?;
        let user = self.store.user(user_id).await?;
        let user = user.ok_or_else(|| WsException::new("User not found."))?;
        Ok(WsResponse::new("showUser", user))
    }
}

/// Entries, readable by every signed-in user.
pub struct EntryGateway {
    store: Store,
}

impl EntryGateway {
    /// The gateway over this store.
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

#[gateway]
impl EntryGateway {
    /// Entries, newest first: `{limit?, offset?}` as over REST (20 by default, 100 at most).
    #[subscribe_message("indexEntry")]
    async fn index_entry(
        &self,
        Data(page): Data<Option<Page>>,
    ) -> Result<WsResponse<Vec<Entry>>, WsError> {
        // No data at all means the first page.
        let page = page.unwrap_or_default();
        page.validate().map_err(|e| WsException::invalid(&e))?;
        let entries = self.store.entries(page.limit, page.offset).await?;
        Ok(WsResponse::new("indexEntry", entries))
    }

    #[subscribe_message("showEntry")]
    async fn show_entry(
        &self,
        Data(query): Data<EntryQuery>,
    ) -> Result<WsResponse<Entry>, WsError> {
        let entry = self.store.entry(query.entry_id()?).await?;
        let entry = entry.ok_or_else(|| WsException::new("Entry not found."))?;
        Ok(WsResponse::new("showEntry", entry))
    }
}

/// Comments of an entry, and the entry's live room.
pub struct CommentGateway {
    state: AppState,
}

impl CommentGateway {
    /// The gateway over the app's store and server handle.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

#[gateway]
impl CommentGateway {
    #[subscribe_message("indexComment")]
    async fn index_comment(
        &self,
        Data(query): Data<EntryQuery>,
    ) -> Result<WsResponse<Vec<Comment>>, WsError> {
        let entry_id = query.entry_id()?;
        if self.state.store.entry(entry_id).await?.is_none() {
            return Err(WsException::new("Entry not found.").into());
        }
        let comments = self.state.store.comments(entry_id).await?;
        Ok(WsResponse::new("indexComment", comments))
    }

    #[subscribe_message("showComment")]
    async fn show_comment(
        &self,
        Data(query): Data<EntryQuery>,
    ) -> Result<WsResponse<Comment>, WsError> {
        let (entry_id, comment_id) = (query.entry_id()?, query.comment_id()?);
        let comment = self.state.store.comment(entry_id, comment_id).await?;
        let comment = comment.ok_or_else(|| WsException::new("Comment not found."))?;
        Ok(WsResponse::new("showComment", comment))
    }

    /// Creates a comment as the connection's user. The stored comment is the ack, and the
    /// entry's room receives `commentCreated`, as for a comment created over REST.
    #[subscribe_message("createComment")]
    async fn create_comment(
        &self,
        Ext(me): Ext<User>,
        Data(new): Data<NewComment>,
    ) -> Result<Ack<Comment>, WsError> {
        // The chapter's message for a missing entry comes before the body's rules.
        let entry_id = new.entry_id.ok_or_else(|| WsException::new("Missing entry id."))?;
        new.validate().map_err(|e| WsException::invalid(&e))?;
        let comment = self.state.store.create_comment(entry_id, me.id, &new.body).await?;
        let comment = comment.ok_or_else(|| WsException::new("Entry not found."))?;
        announce(&self.state, &comment);
        Ok(Ack(comment))
    }

    /// Joins the room `entry:{id}`: the connection then receives `commentCreated`,
    /// `commentUpdated` and `commentDeleted` for the entry, however they happened.
    #[subscribe_message("subscribeEntry")]
    async fn subscribe_entry(
        &self,
        conn: Connection,
        Data(query): Data<EntryQuery>,
    ) -> Result<Value, WsError> {
        let entry_id = query.entry_id()?;
        if self.state.store.entry(entry_id).await?.is_none() {
            return Err(WsException::new("Entry not found.").into());
        }
        conn.join(entry_room(entry_id))?;
        Ok(json!({ "entryId": entry_id, "subscribed": true }))
    }

    /// Leaves the room `entry:{id}`.
    #[subscribe_message("unsubscribeEntry")]
    async fn unsubscribe_entry(
        &self,
        conn: Connection,
        Data(query): Data<EntryQuery>,
    ) -> Result<Value, WsException> {
        let entry_id = query.entry_id()?;
        conn.leave(entry_room(entry_id));
        Ok(json!({ "entryId": entry_id, "subscribed": false }))
    }
}
