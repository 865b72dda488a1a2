//! What an `Observer` sees of traffic: events received and sent with their data, rooms joined
//! and left; and the app's signals between instances (`Server::signal`).
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use serde_json::value::RawValue;
use serde_json::{Value, json};
use wsgate::adapter::Emission;
use wsgate::broker::MemoryBroker;
use wsgate::testing::TestClient;
use wsgate::{
    App, Connection, Data, EventName, Observer, RoomId, Server, WsException, WsResponse, gateway,
};

/// Everything seen, as lines such as `received hello "x"`.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    fn push(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }
}

impl Observer for Log {
    fn event_received(&self, _conn: &Connection, event: &EventName, data: &RawValue) {
        self.push(format!("received {event} {}", data.get()));
    }

    fn event_sent(&self, _conn: &Connection, emission: &Emission) {
        let spread = if emission.is_spread() { " (args)" } else { "" };
        self.push(format!("sent {} {}{spread}", emission.event(), emission.data().get()));
    }

    fn room_joined(&self, _conn: &Connection, room: &RoomId) {
        self.push(format!("joined {room}"));
    }

    fn room_left(&self, _conn: &Connection, room: &RoomId) {
        self.push(format!("left {room}"));
    }

    fn signal(&self, _server: &Server, topic: &str, data: &RawValue) {
        self.push(format!("signal {topic} {}", data.get()));
    }
}

struct Rooms;

#[gateway]
impl Rooms {
    #[subscribe_message("enter")]
    async fn enter(&self, conn: Connection, Data(room): Data<String>) -> Result<(), WsException> {
        conn.join(room)
    }

    #[subscribe_message("exit")]
    async fn exit(&self, conn: Connection, Data(room): Data<String>) {
        conn.leave(room);
    }

    #[subscribe_message("echo")]
    async fn echo(&self, Data(text): Data<String>) -> WsResponse<String> {
        WsResponse::new("echoed", text)
    }
}

#[tokio::test]
async fn an_observer_sees_events_both_ways_and_rooms() {
    let log = Log::default();
    let app = App::builder().observer(log.clone()).gateway(Rooms).build().await.unwrap();
    let mut client = TestClient::builder(&app).connect().await.unwrap();

    client.emit("enter", "lobby").await;
    client.emit("echo", "hi").await;
    assert_eq!(client.event("echoed").await, Some(json!("hi")));
    let emission = Emission::args("pair", &[json!(1), json!("two")]).unwrap();
    app.server().of("/").to("lobby").emit_shared(&emission);
    assert_eq!(client.event("pair").await, Some(json!([1, "two"])));
    client.emit("exit", "lobby").await;
    client.emit("nobody", json!({"a": 1})).await;
    let _ = client.next().await; // the unknown event's exception

    assert_eq!(
        log.lines(),
        [
            r#"received enter "lobby""#,
            "joined lobby",
            r#"received echo "hi""#,
            r#"sent echoed "hi""#,
            r#"sent pair [1,"two"] (args)"#,
            r#"received exit "lobby""#,
            "left lobby",
            r#"received nobody {"a":1}"#,
        ]
    );
    assert_eq!(app.server().connections().len(), 1);
    assert_eq!(app.server().connections()[0].id(), client.connection().id());
}

#[tokio::test]
async fn signals_reach_the_other_instances_only() {
    let broker = MemoryBroker::new();
    let (log_a, log_b) = (Log::default(), Log::default());
    let a = App::builder()
        .server(Server::with_broker(broker.clone()))
        .observer(log_a.clone())
        .gateway(Rooms)
        .build()
        .await
        .unwrap();
    let _b = App::builder()
        .server(Server::with_broker(broker.clone()))
        .observer(log_b.clone())
        .gateway(Rooms)
        .build()
        .await
        .unwrap();

    a.server().signal("tool", &json!({"wanted": [1, 2]})).unwrap();
    assert_eq!(log_b.lines(), [r#"signal tool {"wanted":[1,2]}"#]);
    assert!(log_a.lines().is_empty(), "the sender does not hear itself: {:?}", log_a.lines());

    // Alone, a server signals nobody, and says so by doing nothing.
    let alone = App::builder().observer(log_a.clone()).gateway(Rooms).build().await.unwrap();
    alone.server().signal("tool", &Value::Null).unwrap();
    assert!(log_a.lines().is_empty());
}
