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
use crate::domain::{Comments, Entries, Users, entry_room};
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
        .gateway(UserGateway::new(state.users()))
        .gateway(EntryGateway::new(state.entries()))
        .gateway(CommentGateway::new(state.comments(), state.entries()))
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
    #[validate(custom(function = "crate::domain::comment_body"))]
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
    users: Users,
}

impl UserGateway {
    /// The gateway over the users service.
    pub fn new(users: Users) -> Self {
        Self { users }
    }
}

#[gateway]
impl UserGateway {
    #[subscribe_message("showUser")]
    #[use_guards(OwnUserOnly)]
    async fn show_user(&self, Data(query): Data<UserQuery>) -> Result<WsResponse<User>, WsError> {
        let user_id = query.user_id.ok_or_else(|| WsException::new("Missing user id."))?;
        Ok(WsResponse::new("showUser", self.users.find(user_id).await?))
    }
}

/// Entries, readable by every signed-in user.
pub struct EntryGateway {
    entries: Entries,
}

impl EntryGateway {
    /// The gateway over the entries service.
    pub fn new(entries: Entries) -> Self {
        Self { entries }
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
        Ok(WsResponse::new("indexEntry", self.entries.page(page.limit, page.offset).await?))
    }

    #[subscribe_message("showEntry")]
    async fn show_entry(
        &self,
        Data(query): Data<EntryQuery>,
    ) -> Result<WsResponse<Entry>, WsError> {
        Ok(WsResponse::new("showEntry", self.entries.find(query.entry_id()?).await?))
    }
}

/// Comments of an entry, and the entry's live room.
pub struct CommentGateway {
    comments: Comments,
    entries: Entries,
}

impl CommentGateway {
    /// The gateway over the comments and entries services.
    pub fn new(comments: Comments, entries: Entries) -> Self {
        Self { comments, entries }
    }
}

#[gateway]
impl CommentGateway {
    #[subscribe_message("indexComment")]
    async fn index_comment(
        &self,
        Data(query): Data<EntryQuery>,
    ) -> Result<WsResponse<Vec<Comment>>, WsError> {
        let comments = self.comments.of_entry(query.entry_id()?, None).await?;
        Ok(WsResponse::new("indexComment", comments))
    }

    #[subscribe_message("showComment")]
    async fn show_comment(
        &self,
        Data(query): Data<EntryQuery>,
    ) -> Result<WsResponse<Comment>, WsError> {
        let (entry_id, comment_id) = (query.entry_id()?, query.comment_id()?);
        Ok(WsResponse::new("showComment", self.comments.find(entry_id, comment_id).await?))
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
        Ok(Ack(self.comments.create(entry_id, me.id, &new.body).await?))
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
        self.entries.find(entry_id).await?;
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
