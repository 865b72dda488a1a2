//! The admin namespace's gateway: the UI's login greeting and its operations.

use std::sync::Arc;

use serde_json::{Value, json};
use wsgate::adapter::Emission;
use wsgate::{
    Connection, ConnectionId, Data, Gateway, GatewayOptions, Routes, Server, WsException,
};

use crate::auth::{AdminAuth, NewSession};
use crate::watch::{Action, Operation, TOPIC, Watch, Wire};

/// The features the UI may offer, as `config` lists them (`Feature` in the UI's types).
const FEATURES: [&str; 7] =
    ["EMIT", "JOIN", "LEAVE", "DISCONNECT", "MJOIN", "MLEAVE", "MDISCONNECT"];
/// What a read-only admin namespace answers the UI's operations.
pub const READ_ONLY: &str = "The admin namespace is read-only.";

pub(crate) struct AdminGateway {
    pub(crate) watch: Arc<Watch>,
    pub(crate) auth: AdminAuth,
    pub(crate) readonly: bool,
}

impl Gateway for AdminGateway {
    fn options(&self) -> GatewayOptions {
        GatewayOptions::new().namespace(self.watch.namespace.clone()).middleware(self.auth.clone())
    }

    fn register(routes: &mut Routes<Self>) {
        routes.on(
            "emit",
            |g: Arc<Self>, server: Server, Data(args): Data<Vec<Value>>| async move {
                g.emit(&server, &args)
            },
        );
        routes.on(
            "join",
            |g: Arc<Self>, server: Server, Data(args): Data<Vec<Value>>| async move {
                g.operate(&server, &args, |room| Some(Action::Join(room?.to_owned())))
            },
        );
        routes.on(
            "leave",
            |g: Arc<Self>, server: Server, Data(args): Data<Vec<Value>>| async move {
                g.operate(&server, &args, |room| Some(Action::Leave(room?.to_owned())))
            },
        );
        routes.on(
            "_disconnect",
            |g: Arc<Self>, server: Server, Data(args): Data<Vec<Value>>| async move {
                g.operate(&server, &args, |_| Some(Action::Disconnect))
            },
        );
    }

    fn after_init(&self, server: &Server) -> impl Future<Output = ()> + Send {
        self.watch.start(server);
        async {}
    }

    async fn on_connect(&self, conn: &Connection) {
        if let Some(NewSession(id)) = conn.extension::<NewSession>() {
            let _ = conn.emit("session", id);
        }
        let mut features: Vec<&str> = if self.readonly { Vec::new() } else { FEATURES.to_vec() };
        features.extend(["AGGREGATED_EVENTS", "ALL_EVENTS"]);
        let _ = conn.emit("config", &json!({ "supportedFeatures": features }));
        let _ = conn.emit("all_sockets", &self.watch.sockets(conn.server()));
        self.watch.add_admin(conn);
        // The other instances' sockets come as `socket_connected`, once they answer.
        let wanted = Wire::SocketsWanted { to: conn.id() };
        if let Err(e) = conn.server().signal(TOPIC, &wanted) {
            tracing::debug!(error = %e, "admin: the other instances' sockets not asked for");
        }
    }

    async fn on_disconnect(&self, conn: &Connection) {
        self.watch.remove_admin(conn);
    }
}

impl AdminGateway {
    fn writable(&self) -> Result<(), WsException> {
        if self.readonly { Err(WsException::new(READ_ONLY)) } else { Ok(()) }
    }

    /// `emit` `(nsp, filter, event, ...args)`: to the socket whose id `filter` is (on this
    /// instance), else to the room `filter` names, else to the whole namespace; rooms and
    /// namespaces on every instance.
    fn emit(&self, server: &Server, args: &[Value]) -> Result<(), WsException> {
        self.writable()?;
        let [nsp, filter, event, data @ ..] = args else {
            return Err(WsException::new("emit: expected (nsp, filter, event, ...args)"));
        };
        let (Some(nsp), Some(event)) = (nsp.as_str(), event.as_str()) else {
            return Err(WsException::new("emit: the namespace and the event must be strings"));
        };
        let emission =
            Emission::args(event, data).map_err(|e| WsException::new(format!("emit: {e}")))?;
        let socket = filter
            .as_str()
            .and_then(|f| f.parse::<u64>().ok())
            .and_then(|id| server.connection(ConnectionId(id)))
            .filter(|c| c.namespace().as_str() == nsp);
        match (socket, filter.as_str()) {
            (Some(conn), _) => {
                conn.emit_shared_volatile(&emission);
            }
            (None, Some(room)) => {
                server.of(nsp).to(room).emit_shared(&emission);
            }
            (None, None) => {
                server.of(nsp).emit_shared(&emission);
            }
        }
        Ok(())
    }

    /// `join` / `leave` `(nsp, room, filter)` and `_disconnect` `(nsp, close, filter)`:
    /// applied here and on every other instance.
    fn operate(
        &self,
        server: &Server,
        args: &[Value],
        action: impl FnOnce(Option<&str>) -> Option<Action>,
    ) -> Result<(), WsException> {
        self.writable()?;
        let nsp = args.first().and_then(Value::as_str);
        let (Some(nsp), Some(action)) = (nsp, action(args.get(1).and_then(Value::as_str))) else {
            return Err(WsException::new("expected (nsp, room or close, filter)"));
        };
        let filter = args.get(2).and_then(Value::as_str).map(str::to_owned);
        let op = Operation { nsp: nsp.to_owned(), filter, action };
        op.apply(server);
        if let Err(e) = server.signal(TOPIC, &Wire::Operation { op }) {
            tracing::debug!(error = %e, "admin operation not sent to the other instances");
        }
        Ok(())
    }
}
