//! Presence through the app: tracking in a room, diffs to watchers (two tabs are one key), the
//! list from every instance of a broker, volatile emits, and a silent instance's entries
//! removed.
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use wsgate::broker::MemoryBroker;
use wsgate::presence::PresenceConfig;
use wsgate::testing::{Received, TestClient};
use wsgate::{
    App, AppConfig, ConnectMiddleware, Connection, Data, Ext, Handshake, Refusal, Server, WsError,
    gateway,
};

#[derive(Clone, Debug)]
struct User(String);

struct QueryUser;

impl ConnectMiddleware for QueryUser {
    async fn handle(&self, hs: &mut Handshake) -> Result<(), Refusal> {
        let user =
            hs.query_param("user").ok_or_else(|| Refusal::unauthorized("Who?"))?.into_owned();
        hs.extensions.insert(User(user));
        Ok(())
    }
}

#[derive(Deserialize)]
struct RoomName {
    room: String,
}

struct Lobby;

#[gateway]
impl Lobby {
    #[subscribe_message("enter")]
    async fn enter(
        &self,
        conn: Connection,
        Ext(user): Ext<User>,
        Data(r): Data<RoomName>,
    ) -> Result<(), WsError> {
        conn.track(
            r.room.clone(),
            user.0.clone(),
            &json!({ "name": user.0, "conn": conn.id().0 }),
        )?;
        conn.watch_presence(r.room);
        Ok(())
    }

    /// Watching a room without being in it: nothing.
    #[subscribe_message("peek")]
    async fn peek(&self, conn: Connection, Data(r): Data<RoomName>) {
        conn.watch_presence(r.room);
    }

    #[subscribe_message("exit")]
    async fn exit(&self, conn: Connection, Data(r): Data<RoomName>) {
        conn.leave(r.room);
    }

    #[subscribe_message("who")]
    async fn who(&self, conn: Connection, Data(r): Data<RoomName>) -> Value {
        json!(conn.presence(r.room))
    }

    #[subscribe_message("typing")]
    async fn typing(
        &self,
        conn: Connection,
        server: Server,
        Ext(user): Ext<User>,
        Data(r): Data<RoomName>,
    ) -> Result<(), WsError> {
        server
            .to(r.room)
            .except(conn.id())
            .except_key(user.0)
            .volatile()
            .emit("typing", &json!({ "conn": conn.id().0 }))?;
        Ok(())
    }
}

fn fast() -> AppConfig {
    AppConfig {
        presence: PresenceConfig {
            interval: Duration::from_millis(10),
            heartbeat: Duration::from_millis(50),
            timeout: Duration::from_millis(400),
        },
        ..AppConfig::default()
    }
}

async fn app(server: Server) -> App {
    App::builder()
        .server(server)
        .config(fast())
        .middleware(QueryUser)
        .gateway(Lobby)
        .build()
        .await
        .unwrap()
}

async fn client(app: &App, user: &str) -> TestClient {
    TestClient::builder(app).query(format!("user={user}")).connect().await.unwrap()
}

fn keys(entries: &Value) -> Vec<String> {
    entries.as_array().unwrap().iter().map(|e| e["key"].as_str().unwrap().to_owned()).collect()
}

fn changed(diff: &Value, side: &str) -> Vec<String> {
    diff[side].as_array().unwrap().iter().map(|c| c["key"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn two_tabs_are_one_reader_and_the_last_tab_is_the_leave() {
    let app = app(Server::new()).await;
    let mut grace = client(&app, "grace").await;
    grace.emit("enter", json!({ "room": "r" })).await;
    let diff = grace.event("presenceDiff").await.unwrap();
    assert_eq!(diff["room"], "r");
    assert_eq!(changed(&diff, "joins"), ["grace"]);

    let mut outsider = client(&app, "eve").await;
    outsider.emit("peek", json!({ "room": "r" })).await;

    let mut ada_one = client(&app, "ada").await;
    let mut ada_two = client(&app, "ada").await;
    ada_one.emit("enter", json!({ "room": "r" })).await;
    ada_two.emit("enter", json!({ "room": "r" })).await;
    let diff = grace.event("presenceDiff").await.unwrap();
    assert_eq!(changed(&diff, "joins"), ["ada"], "two tabs, one join (coalesced): {diff}");
    assert_eq!(
        diff["joins"][0]["meta"]["conn"],
        ada_one.connection().id().0,
        "with its first meta"
    );
    let who = ada_two.request("who", json!({ "room": "r" })).await.unwrap();
    assert_eq!(keys(&who), ["ada", "grace"]);
    assert_eq!(who[0]["metas"].as_array().unwrap().len(), 2);

    // Closing one tab is not a leave; the last one is, with its meta.
    ada_one.disconnect().await;
    assert!(grace.next_within(Duration::from_millis(100)).await.is_none(), "no diff for one tab");
    let last = ada_two.connection().id().0;
    ada_two.emit("exit", json!({ "room": "r" })).await;
    let diff = grace.event("presenceDiff").await.unwrap();
    assert_eq!(changed(&diff, "leaves"), ["ada"]);
    assert_eq!(diff["leaves"][0]["meta"]["conn"], last);
    let who = grace.request("who", json!({ "room": "r" })).await.unwrap();
    assert_eq!(keys(&who), ["grace"]);
    assert!(
        outsider.drain().is_empty(),
        "a connection outside the room watches nothing, though it asked"
    );
}

#[tokio::test]
async fn a_custom_diff_shape_and_volatile_typing() {
    let app = App::builder()
        .config(fast())
        .middleware(QueryUser)
        .presence_diff(|diff| {
            let names = |side: &[wsgate::presence::PresenceChange]| -> Vec<Value> {
                side.iter().map(|c| c.meta["name"].clone()).collect()
            };
            Some((
                "readers".into(),
                json!({ "in": diff.room, "came": names(&diff.joins), "went": names(&diff.leaves) }),
            ))
        })
        .gateway(Lobby)
        .build()
        .await
        .unwrap();
    let mut a = client(&app, "a").await;
    let mut b = client(&app, "b").await;
    a.emit("enter", json!({ "room": "r" })).await;
    b.emit("enter", json!({ "room": "r" })).await;
    let seen = a.event("readers").await.unwrap();
    assert_eq!(seen["in"], "r");
    assert!(seen["came"].as_array().unwrap().contains(&json!("a")), "{seen}");
    b.drain();
    a.drain();
    a.emit("typing", json!({ "room": "r" })).await;
    assert_eq!(b.event("typing").await.unwrap()["conn"], a.connection().id().0);
    assert!(a.drain().iter().all(
        |r| !matches!(r, wsgate::testing::Received::Event { event, .. } if event == "typing")
    ));
}

#[tokio::test]
async fn instances_share_presence_and_a_silent_one_leaves() {
    let broker = MemoryBroker::new();
    let one = app(Server::with_broker(broker.clone())).await;
    let two = app(Server::with_broker(broker.clone())).await;
    let mut ada = client(&one, "ada").await;
    let mut grace = client(&two, "grace").await;
    ada.emit("enter", json!({ "room": "r" })).await;
    grace.emit("enter", json!({ "room": "r" })).await;

    // Each lists both, and each watcher is told of the other.
    let mut waited = 0;
    loop {
        let on_one = keys(&ada.request("who", json!({ "room": "r" })).await.unwrap());
        let on_two = keys(&grace.request("who", json!({ "room": "r" })).await.unwrap());
        if on_one == ["ada", "grace"] && on_two == ["ada", "grace"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += 1;
        assert!(waited < 200, "never the same readers: {on_one:?} / {on_two:?}");
    }
    let mut joined = Vec::new();
    while joined.len() < 2 {
        joined.extend(changed(&ada.event("presenceDiff").await.unwrap(), "joins"));
    }
    joined.sort();
    assert_eq!(joined, ["ada", "grace"]);

    // Typing crosses instances, volatile, and skips the typist's other tabs everywhere.
    let mut ada_two = client(&two, "ada").await;
    ada_two.emit("enter", json!({ "room": "r" })).await;
    ada.emit("typing", json!({ "room": "r" })).await;
    assert_eq!(grace.event("typing").await.unwrap()["conn"], ada.connection().id().0);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let typed = |r: &Received| matches!(r, Received::Event { event, .. } if event == "typing");
    assert!(!ada_two.drain().iter().any(typed), "not to the typist's other tab");
    assert!(!ada.drain().iter().any(typed), "nor to the typist");
    drop(ada_two);

    // Instance two goes silent (dropped, as a killed process would): past the timeout,
    // grace leaves on instance one.
    drop(grace);
    drop(two);
    let diff = ada.event("presenceDiff").await.unwrap();
    assert_eq!(changed(&diff, "leaves"), ["grace"], "{diff}");
    assert_eq!(keys(&ada.request("who", json!({ "room": "r" })).await.unwrap()), ["ada"]);
}
