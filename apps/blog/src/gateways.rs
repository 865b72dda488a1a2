//! The blog's gateways: the chapter's `showUser`, `indexComment` and `showComment`, and
//! `subscribeEntry` / `unsubscribeEntry` for live `commentCreated` pushes, served over every
//! transport the server mounts.
//!
//! Every connection carries the [`User`] that [`auth_middleware`] attached at the handshake;
//! handlers take it with `Ext<User>`. Data fields are optional in the payload types so that a
//! missing field gets the chapter's own message (`Missing entry id.`), while a field of the
//! wrong type gets the extractor's message naming it (`Invalid entryId: …`).

use serde::Deserialize;
use serde_json::{Value, json};
use wsgate::{
    App, BuildError, Claims, Connection, Data, Ext, JwtAuth, JwtKeys, WsError, WsException,
    WsResponse, gateway,
};

use crate::AppState;
use crate::comments::entry_room;

use crate::models::{Comment, User};
use crate::store::Store;

/// The blog's gateways behind [`auth_middleware`], sharing the state's server handle.
pub async fn app(state: &AppState) -> Result<App, BuildError> {
    App::builder()
        .server(state.server.clone())
        .middleware(auth_middleware(state.jwt.clone(), state.store.clone()))
        .gateway(UserGateway::new(state.store.clone()))
        .gateway(CommentGateway::new(state.store.clone()))
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

/// `indexComment {entryId}` and `showComment {entryId, commentId}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommentQuery {
    entry_id: Option<i64>,
    comment_id: Option<i64>,
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
    async fn show_user(
        &self,
        Ext(me): Ext<User>,
        Data(query): Data<UserQuery>,
    ) -> Result<WsResponse<User>, WsError> {
        let user_id = query.user_id.ok_or_else(|| WsException::new("Missing user id."))?;
        if user_id != me.id {
            return Err(WsException::new("Forbidden.").into());
        }
        let user = self.store.user(user_id).await?;
        let user = user.ok_or_else(|| WsException::new("User not found."))?;
        Ok(WsResponse::new("showUser", user))
    }
}

/// Comments of an entry.
pub struct CommentGateway {
    store: Store,
}

impl CommentGateway {
    /// The gateway over this store.
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

#[gateway]
impl CommentGateway {
    #[subscribe_message("indexComment")]
    async fn index_comment(
        &self,
        Data(query): Data<CommentQuery>,
    ) -> Result<WsResponse<Vec<Comment>>, WsError> {
        let entry_id = query.entry_id.ok_or_else(|| WsException::new("Missing entry id."))?;
        if self.store.entry(entry_id).await?.is_none() {
            return Err(WsException::new("Entry not found.").into());
        }
        let comments = self.store.comments(entry_id).await?;
        Ok(WsResponse::new("indexComment", comments))
    }

    /// Joins the room `entry:{id}`: the connection then receives `commentCreated` for every
    /// comment on the entry, created over REST or a gateway.
    #[subscribe_message("subscribeEntry")]
    async fn subscribe_entry(
        &self,
        conn: Connection,
        Data(query): Data<CommentQuery>,
    ) -> Result<Value, WsError> {
        let entry_id = query.entry_id.ok_or_else(|| WsException::new("Missing entry id."))?;
        if self.store.entry(entry_id).await?.is_none() {
            return Err(WsException::new("Entry not found.").into());
        }
        conn.join(entry_room(entry_id));
        Ok(json!({ "entryId": entry_id, "subscribed": true }))
    }

    /// Leaves the room `entry:{id}`.
    #[subscribe_message("unsubscribeEntry")]
    async fn unsubscribe_entry(
        &self,
        conn: Connection,
        Data(query): Data<CommentQuery>,
    ) -> Result<Value, WsException> {
        let entry_id = query.entry_id.ok_or_else(|| WsException::new("Missing entry id."))?;
        conn.leave(entry_room(entry_id));
        Ok(json!({ "entryId": entry_id, "subscribed": false }))
    }

    #[subscribe_message("showComment")]
    async fn show_comment(
        &self,
        Data(query): Data<CommentQuery>,
    ) -> Result<WsResponse<Comment>, WsError> {
        let entry_id = query.entry_id.ok_or_else(|| WsException::new("Missing entry id."))?;
        let comment_id = query.comment_id.ok_or_else(|| WsException::new("Missing comment id."))?;
        let comment = self.store.comment(entry_id, comment_id).await?;
        let comment = comment.ok_or_else(|| WsException::new("Comment not found."))?;
        Ok(WsResponse::new("showComment", comment))
    }
}
