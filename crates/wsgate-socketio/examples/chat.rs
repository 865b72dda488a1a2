//! A chat gateway on the namespace `/chat`, reachable over Socket.IO and plain WebSocket at
//! once. It shows a custom connection middleware, rooms, broadcasts from the server handle,
//! binary attachments and several arguments both ways, and the lifecycle hooks, and topics on
//! pattern namespaces (`/topic-<n>`); the e2e suite drives it.
//!
//! Run it with `cargo run -p wsgate-socketio --example chat` (`PORT` picks the port, 3400 by
//! default; 0 for any), then:
//!
//! ```js
//! const socket = io('http://127.0.0.1:3400/chat', { auth: { name: 'ada' } });
//! socket.emit('join', { room: 'lobby' }, (ok) => socket.emit('say', { room: 'lobby', text: 'hi' }));
//! socket.on('said', (m) => console.log(m)); // { from: 'ada', text: 'hi' }
//! ```
//!
//! or `new WebSocket('ws://127.0.0.1:3400/ws/chat?name=bob')`.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use wsgate::{
    App, Args, Binary, ConnectMiddleware, Connection, Data, Ext, Handshake, Refusal, Server,
    WsException, gateway,
};
use wsgate_socketio::SocketIoAdapter;
use wsgate_ws::WsAdapter;

/// Who is talking: from the Socket.IO `auth` payload or the `name` query parameter.
#[derive(Clone, Debug)]
struct Name(String);

/// Refuses connections without a name.
struct RequireName;

impl ConnectMiddleware for RequireName {
    async fn handle(&self, hs: &mut Handshake) -> Result<(), Refusal> {
        let from_auth = hs.auth.as_ref().and_then(|a| a.get("name")).and_then(Value::as_str);
        let name = match from_auth {
            Some(name) => name.to_owned(),
            None => hs.query_param("name").map(|n| n.into_owned()).unwrap_or_default(),
        };
        if name.is_empty() {
            return Err(Refusal::unauthorized("A name is required."));
        }
        hs.extensions.insert(Name(name));
        Ok(())
    }
}

#[derive(Deserialize)]
struct Room {
    room: String,
}

#[derive(Deserialize)]
struct Say {
    room: String,
    text: String,
}

/// A file for a room: its bytes come as a binary attachment.
#[derive(Deserialize)]
struct Share {
    room: String,
    name: String,
    file: Bytes,
}

struct ChatGateway {
    server: Server,
}

#[gateway(namespace = "/chat")]
impl ChatGateway {
    #[subscribe_message("join")]
    async fn join(
        &self,
        conn: Connection,
        Data(Room { room }): Data<Room>,
    ) -> Result<bool, WsException> {
        conn.join(room)?;
        Ok(true)
    }

    #[subscribe_message("say")]
    async fn say(
        &self,
        Ext(Name(from)): Ext<Name>,
        Data(say): Data<Say>,
    ) -> Result<(), WsException> {
        if say.text.is_empty() {
            return Err(WsException::new("Nothing to say."));
        }
        let message = json!({ "from": from, "text": say.text });
        // To everyone in the room, whichever transport they use; serialised once.
        let _ = self.server.of("/chat").to(say.room).emit("said", &message);
        Ok(())
    }

    /// Asks the sender a `question` and acks with its answer: an ack from the server.
    #[subscribe_message("quiz")]
    async fn quiz(&self, conn: Connection, Data(question): Data<String>) -> Value {
        match conn.emit_with_ack("question", &question, Duration::from_millis(500)).await {
            Ok(answer) => json!({ "answer": answer }),
            Err(e) => json!({ "error": e.to_string() }),
        }
    }

    /// Asks a room's other members to `vote`, and acks with every answer (or why none),
    /// by connection id.
    #[subscribe_message("poll")]
    async fn poll(&self, conn: Connection, Data(Room { room }): Data<Room>) -> Value {
        let answers = self
            .server
            .of("/chat")
            .to(room)
            .except(conn.id())
            .emit_with_ack("vote", "tea or coffee?", Duration::from_millis(500))
            .await;
        let answers = answers.into_iter().map(|(id, answer)| match answer {
            Ok(vote) => (id.0.to_string(), vote),
            Err(e) => (id.0.to_string(), json!({ "error": e.to_string() })),
        });
        Value::Object(answers.collect())
    }

    /// The connection's id, to match `poll`'s answers.
    #[subscribe_message("whoami")]
    async fn whoami(&self, conn: Connection) -> String {
        conn.id().0.to_string()
    }

    #[subscribe_message("upload")]
    async fn upload(&self, Data(meta): Data<Value>, Binary(files): Binary) -> Value {
        let sizes: Vec<usize> = files.iter().map(|f| f.len()).collect();
        json!({ "name": meta["name"], "sizes": sizes })
    }

    /// `reverse(name, bytes)`: acks with two arguments, the name and the bytes reversed.
    #[subscribe_message("reverse")]
    async fn reverse(&self, Args((name, file)): Args<(String, Bytes)>) -> Args<(String, Bytes)> {
        let mut bytes = file.to_vec();
        bytes.reverse();
        Args((name, Bytes::from(bytes)))
    }

    /// `share({room, name, file})`: the room gets `file(from, name, bytes)`; acks with how
    /// many received it here.
    #[subscribe_message("share")]
    async fn share(&self, Ext(Name(from)): Ext<Name>, Data(share): Data<Share>) -> usize {
        let file = Args((from, share.name, share.file));
        self.server.of("/chat").to(share.room).emit("file", &file).unwrap_or(0)
    }

    /// Asks the sender to `sign` some bytes (`sign(size, bytes)`, a request of the server's
    /// with an attachment), and acks with its answer.
    #[subscribe_message("countersign")]
    async fn countersign(&self, conn: Connection, Data(text): Data<String>) -> Value {
        let request = Args((text.len(), Bytes::from(text.into_bytes())));
        match conn.emit_with_ack("sign", &request, Duration::from_millis(2000)).await {
            Ok(answer) => json!({ "answer": answer }),
            Err(e) => json!({ "error": e.to_string() }),
        }
    }

    #[on_connect]
    async fn welcome(&self, conn: &Connection) {
        if let Some(Name(name)) = conn.extension::<Name>() {
            let _ = conn.emit("welcome", &format!("Hello, {name}!"));
        }
    }

    #[on_disconnect]
    async fn left(&self, conn: &Connection) {
        if let Some(Name(name)) = conn.extension::<Name>() {
            let _ = self.server.of("/chat").emit("left", name);
        }
    }
}

/// Topics: every namespace `/topic-<n>` is one of its own (a pattern namespace), with its
/// rooms; `say` reaches the topic's members only.
struct TopicGateway {
    server: Server,
}

#[gateway(namespace_pattern = r"^/topic-\d+$")]
impl TopicGateway {
    /// The topic's namespace, and the connection joins its members.
    #[subscribe_message("enter")]
    async fn enter(&self, conn: Connection) -> Result<String, WsException> {
        conn.join("members")?;
        Ok(conn.namespace().to_string())
    }

    #[subscribe_message("say")]
    async fn say(&self, conn: Connection, Ext(Name(from)): Ext<Name>, Data(text): Data<String>) {
        let message = json!({ "from": from, "text": text, "topic": conn.namespace() });
        let _ = self.server.of(conn.namespace().clone()).to("members").emit("said", &message);
    }
}

/// The lobby, on a port of its own (Nest's `@WebSocketGateway(port)`): `LOBBY_PORT`, by
/// default the next one (any, with `PORT=0`). It shares the server handle with the rest:
/// `announce` reaches everyone in `/chat` on the main port.
struct LobbyGateway {
    server: Server,
    port: u16,
}

fn lobby_options(lobby: &LobbyGateway) -> wsgate::GatewayOptions {
    wsgate::GatewayOptions::new().namespace("/lobby").port(lobby.port)
}

#[gateway(options = lobby_options)]
impl LobbyGateway {
    #[subscribe_message("announce")]
    async fn announce(&self, Ext(Name(from)): Ext<Name>, Data(text): Data<String>) -> bool {
        let _ =
            self.server.of("/chat").emit("announcement", &json!({ "from": from, "text": text }));
        true
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let env_port = |name: &str| std::env::var(name).ok().and_then(|p| p.parse::<u16>().ok());
    let port = env_port("PORT").unwrap_or(3400);
    let lobby_port = env_port("LOBBY_PORT").unwrap_or(if port == 0 { 0 } else { port + 1 });
    let server = Server::new();
    let app = App::builder()
        .server(server.clone())
        .middleware(RequireName)
        .gateway(ChatGateway { server: server.clone() })
        .gateway(TopicGateway { server: server.clone() })
        .gateway(LobbyGateway { server, port: lobby_port })
        .build()
        .await?;
    // Every gateway with a port of its own gets a listener of its own, both transports on it.
    for port in app.ports() {
        let lobby = app.on_port(port);
        let router = lobby.mount(Router::new(), WsAdapter::new());
        let router = lobby.mount(router, SocketIoAdapter::new());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        println!("lobby on http://{}", listener.local_addr()?);
        tokio::spawn(async move {
            let service = router.into_make_service_with_connect_info::<SocketAddr>();
            if let Err(e) = axum::serve(listener, service).await {
                eprintln!("lobby listener failed: {e}");
            }
        });
    }
    let router = app.mount(Router::new(), WsAdapter::new());
    let router = app.mount(router, SocketIoAdapter::new());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
