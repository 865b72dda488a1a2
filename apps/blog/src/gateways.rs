//! The blog's gateways, served over every transport the server mounts: the chapter's
//! `showUser`, `indexComment` and `showComment`; `indexEntry` and `showEntry`;
//! `createComment`; and `subscribeEntry` / `unsubscribeEntry` for the live `commentCreated`,
//! `commentUpdated` and `commentDeleted` pushes of an entry's room. Presence: a subscriber is a
//! reader of the entry (`presenceEntry`, `presenceDiff`), and `typing` is relayed to the other
//! readers.
//!
//! Every connection carries the [`User`] that [`auth_middleware`] attached at the handshake.
//! Data fields are optional in the payload types so that a missing field gets the chapter's
//! own message (`Missing entry id.`), while a field of the wrong type gets the extractor's
//! message naming it (`Invalid entryId: …`).

use serde::{Deserialize, Serialize};
use validator::Validate;
use wsgate::presence::{PresenceChange, PresenceDiff};
use wsgate::{
    Ack, App, BuildError, Claims, Connection, Data, EventName, Ext, Guard, JwtAuth, JwtKeys,
    MessageContext, Server, WsError, WsException, WsResponse, gateway,
};

use crate::AppState;
use crate::domain::{
    COMMENT_CREATED, COMMENT_DELETED, COMMENT_UPDATED, Comments, DeletedComment, Entity, Entries,
    Users, entry_room,
};
use crate::models::{Comment, Entry, Page, User};
use crate::store::Store;

/// The blog's gateways behind [`auth_middleware`], sharing the state's server handle.
///
/// With `--admin-ui`, the Socket.IO Admin UI's `/admin` namespace too, with its own login
/// instead of the token ([`wsgate_admin`]).
pub async fn app(state: &AppState) -> Result<App, BuildError> {
    let builder = App::builder()
        .server(state.server.clone())
        .config(state.gateway_config.clone())
        .observer(state.metrics.clone())
        .middleware(state.origins.clone());
    let auth = auth_middleware(state.jwt.clone(), state.store.clone());
    let builder = match &state.admin_ui {
        None => builder.middleware(auth),
        Some((credentials, readonly)) => {
            let admin = wsgate_admin::AdminUi::new(credentials.clone()).readonly(*readonly);
            let builder = builder.middleware(admin.skip(auth));
            admin.install(builder)
        }
    };
    builder
        .presence_diff(presence_diff)
        .gateway(UserGateway::new(state.users()))
        .gateway(EntryGateway::new(state.entries()))
        .gateway(CommentGateway::new(state.comments(), state.entries()))
        .build()
        .await
}

/// The event readers of an entry receive as others come and go.
pub const PRESENCE_DIFF: &str = "presenceDiff";
/// The event relayed to an entry's other readers while someone types.
pub const TYPING: &str = "typing";
/// The exception of `typing` from a connection that is not reading the entry.
pub const NOT_SUBSCRIBED: &str = "Subscribe to the entry first.";

/// A reader of an entry, as others see them: never the e-mail address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Reader {
    /// The reader's user id.
    pub user_id: i64,
    /// Their given name.
    pub first_name: String,
}

/// `presenceDiff`: who started and stopped reading an entry (a user with two tabs open is one
/// reader, who leaves with the last tab).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadersDiff {
    /// The entry.
    pub entry_id: i64,
    /// New readers.
    pub joins: Vec<Reader>,
    /// Readers gone.
    pub leaves: Vec<Reader>,
}

/// The reply of `presenceEntry`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Readers {
    /// The entry.
    pub entry_id: i64,
    /// Who reads it now, on every instance, in user id order.
    pub readers: Vec<Reader>,
}

/// `typing`, relayed to an entry's other readers: volatile (a slow client misses it, and
/// recovery never replays it).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Typing {
    /// The entry.
    pub entry_id: i64,
    /// Who types.
    pub user_id: i64,
    /// Their given name.
    pub first_name: String,
}

/// The entry of a room `entry:{id}`.
fn room_entry(room: &str) -> Option<i64> {
    room.strip_prefix("entry:")?.parse().ok()
}

/// Readers from presence metas (what `subscribeEntry` tracked); others are skipped.
fn readers<'a>(metas: impl Iterator<Item = &'a serde_json::Value>) -> Vec<Reader> {
    metas.filter_map(|m| serde_json::from_value(m.clone()).ok()).collect()
}

/// The core's diff of an entry's room as `presenceDiff {entryId, joins, leaves}`.
fn presence_diff(diff: &PresenceDiff) -> Option<(EventName, serde_json::Value)> {
    let entry_id = room_entry(diff.room.as_str())?;
    let metas = |side: &[PresenceChange]| readers(side.iter().map(|c| &c.meta));
    let body = ReadersDiff { entry_id, joins: metas(&diff.joins), leaves: metas(&diff.leaves) };
    Some((PRESENCE_DIFF.into(), serde_json::to_value(body).ok()?))
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

/// The exception of a message without `entryId`.
pub const MISSING_ENTRY_ID: &str = "Missing entry id.";
/// The exception of `showComment` without `commentId`.
pub const MISSING_COMMENT_ID: &str = "Missing comment id.";
/// The exception of `showUser` without `userId`.
pub const MISSING_USER_ID: &str = "Missing user id.";
/// The exception of `showUser` for another user.
pub const FORBIDDEN: &str = "Forbidden.";

/// `showUser {userId}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserQuery {
    /// The user's id: your own (another user's is `Forbidden.`).
    user_id: Option<i64>,
}

/// `showEntry {entryId}`, `indexComment {entryId}`, `showComment {entryId, commentId}`,
/// `subscribeEntry {entryId}`, `unsubscribeEntry {entryId}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EntryQuery {
    /// The entry's id.
    entry_id: Option<i64>,
    /// The comment's id (`showComment`).
    comment_id: Option<i64>,
}

impl EntryQuery {
    fn entry_id(&self) -> Result<i64, WsException> {
        self.entry_id.ok_or_else(|| WsException::new(MISSING_ENTRY_ID))
    }

    fn comment_id(&self) -> Result<i64, WsException> {
        self.comment_id.ok_or_else(|| WsException::new(MISSING_COMMENT_ID))
    }
}

/// `createComment {entryId, body}`.
#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewComment {
    /// The entry to comment on.
    entry_id: Option<i64>,
    /// The comment's text, 1 to 10 000 characters.
    #[validate(custom(function = "crate::domain::comment_body"))]
    #[serde(default)]
    #[schema(min_length = 1, max_length = 10000)]
    body: String,
}

/// The ack of `subscribeEntry` and `unsubscribeEntry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    /// The entry.
    pub entry_id: i64,
    /// Whether the connection is now in the entry's room.
    pub subscribed: bool,
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
            (Some(id), Some(me)) if id != me.id => Err(WsException::new(FORBIDDEN).into()),
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
    /// Your own user record (the chapter's `showUser`).
    #[subscribe_message("showUser")]
    #[use_guards(OwnUserOnly)]
    #[throws(MISSING_USER_ID, FORBIDDEN, Entity::User.not_found())]
    async fn show_user(&self, Data(query): Data<UserQuery>) -> Result<WsResponse<User>, WsError> {
        let user_id = query.user_id.ok_or_else(|| WsException::new(MISSING_USER_ID))?;
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
    #[throws("limit must be between 1 and 100.", "offset must be at least 0.")]
    async fn index_entry(
        &self,
        Data(page): Data<Option<Page>>,
    ) -> Result<WsResponse<Vec<Entry>>, WsError> {
        // No data at all means the first page.
        let page = page.unwrap_or_default();
        page.validate().map_err(|e| WsException::invalid(&e))?;
        Ok(WsResponse::new("indexEntry", self.entries.page(page.limit, page.offset).await?))
    }

    /// One entry.
    #[subscribe_message("showEntry")]
    #[throws(MISSING_ENTRY_ID, Entity::Entry.not_found())]
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

#[gateway(pushes(
    COMMENT_CREATED: Comment,
    COMMENT_UPDATED: Comment,
    COMMENT_DELETED: DeletedComment,
    PRESENCE_DIFF: ReadersDiff,
    TYPING: Typing,
))]
impl CommentGateway {
    /// The comments of an entry, oldest first (the chapter's `indexComment`).
    #[subscribe_message("indexComment")]
    #[throws(MISSING_ENTRY_ID, Entity::Entry.not_found())]
    async fn index_comment(
        &self,
        Data(query): Data<EntryQuery>,
    ) -> Result<WsResponse<Vec<Comment>>, WsError> {
        let comments = self.comments.of_entry(query.entry_id()?, None).await?;
        Ok(WsResponse::new("indexComment", comments))
    }

    /// One comment of an entry (the chapter's `showComment`).
    #[subscribe_message("showComment")]
    #[throws(
        MISSING_ENTRY_ID,
        MISSING_COMMENT_ID,
        Entity::Entry.not_found(),
        Entity::Comment.not_found()
    )]
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
    #[throws(
        MISSING_ENTRY_ID,
        "body must be between 1 and 10000 characters long.",
        Entity::Entry.not_found()
    )]
    async fn create_comment(
        &self,
        Ext(me): Ext<User>,
        Data(new): Data<NewComment>,
    ) -> Result<Ack<Comment>, WsError> {
        // The chapter's message for a missing entry comes before the body's rules.
        let entry_id = new.entry_id.ok_or_else(|| WsException::new(MISSING_ENTRY_ID))?;
        new.validate().map_err(|e| WsException::invalid(&e))?;
        Ok(Ack(self.comments.create(entry_id, me.id, &new.body).await?))
    }

    /// Joins the room `entry:{id}`: the connection then receives `commentCreated`,
    /// `commentUpdated` and `commentDeleted` for the entry, however they happened.
    #[subscribe_message("subscribeEntry")]
    #[throws(MISSING_ENTRY_ID, Entity::Entry.not_found())]
    async fn subscribe_entry(
        &self,
        conn: Connection,
        Ext(me): Ext<User>,
        Data(query): Data<EntryQuery>,
    ) -> Result<Ack<Subscription>, WsError> {
        let entry_id = query.entry_id()?;
        self.entries.find(entry_id).await?;
        let room = entry_room(entry_id);
        // A reader of the entry: the others see `{userId, firstName}`, never the e-mail.
        let reader = Reader { user_id: me.id, first_name: me.first_name.clone() };
        conn.track(room.clone(), me.id.to_string(), &reader)?;
        conn.watch_presence(room);
        Ok(Ack(Subscription { entry_id, subscribed: true }))
    }

    /// Who reads an entry now, on every instance (open to any signed-in user).
    #[subscribe_message("presenceEntry")]
    #[throws(MISSING_ENTRY_ID, Entity::Entry.not_found())]
    async fn presence_entry(
        &self,
        server: Server,
        Data(query): Data<EntryQuery>,
    ) -> Result<WsResponse<Readers>, WsError> {
        let entry_id = query.entry_id()?;
        self.entries.find(entry_id).await?;
        let present = server.presence(entry_room(entry_id));
        let readers = readers(present.iter().filter_map(|e| e.metas.first()));
        Ok(WsResponse::new("presenceEntry", Readers { entry_id, readers }))
    }

    /// Tells the entry's other readers that you are typing (`typing {entryId, userId,
    /// firstName}`, volatile). Send it every few seconds while typing; it answers nothing.
    #[subscribe_message("typing")]
    #[throws(MISSING_ENTRY_ID, NOT_SUBSCRIBED)]
    async fn typing(
        &self,
        conn: Connection,
        server: Server,
        Ext(me): Ext<User>,
        Data(query): Data<EntryQuery>,
    ) -> Result<(), WsError> {
        let entry_id = query.entry_id()?;
        let room = entry_room(entry_id);
        // A reader: subscribed on this connection (a recovered one subscribes again).
        if !conn.is_tracked(room.clone()) {
            return Err(WsException::new(NOT_SUBSCRIBED).into());
        }
        let typing = Typing { entry_id, user_id: me.id, first_name: me.first_name };
        // To the other readers: not to the typist's other tabs either.
        let others = server.to(room).except(conn.id()).except_key(me.id.to_string());
        others.volatile().emit(TYPING, &typing)?;
        Ok(())
    }

    /// Leaves the room `entry:{id}`.
    #[subscribe_message("unsubscribeEntry")]
    #[throws(MISSING_ENTRY_ID)]
    async fn unsubscribe_entry(
        &self,
        conn: Connection,
        Data(query): Data<EntryQuery>,
    ) -> Result<Ack<Subscription>, WsException> {
        let entry_id = query.entry_id()?;
        conn.leave(entry_room(entry_id));
        Ok(Ack(Subscription { entry_id, subscribed: false }))
    }
}
