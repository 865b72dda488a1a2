//! Namespaces matching a pattern (Socket.IO's dynamic namespaces): each matching name is a
//! namespace of its own, with its rooms; exact namespaces come first; other names are refused.
#![allow(missing_docs, clippy::unwrap_used)]

use serde_json::json;
use wsgate::testing::{Received, TestClient};
use wsgate::{
    App, AppConfig, BuildError, Connection, Gateway, GatewayOptions, Recovery, Routes, Server,
    SessionRequest, gateway,
};

struct Entries;

#[gateway(namespace_pattern = r"^/entry-\d+$")]
impl Entries {
    /// Which namespace the connection is in, and its room there.
    #[subscribe_message("where")]
    async fn where_(&self, conn: Connection) -> String {
        conn.namespace().to_string()
    }

    #[subscribe_message("join")]
    async fn join(&self, conn: Connection) -> Result<(), wsgate::WsError> {
        Ok(conn.join("readers")?)
    }

    #[subscribe_message("shout")]
    async fn shout(&self, conn: Connection, server: Server) -> Result<(), wsgate::WsError> {
        server.of(conn.namespace().clone()).to("readers").emit("news", &conn.namespace())?;
        Ok(())
    }
}

/// An exact namespace that the pattern would match: it wins.
struct Special;

impl Gateway for Special {
    fn options(&self) -> GatewayOptions {
        GatewayOptions::new().namespace("/entry-0")
    }
    fn register(routes: &mut Routes<Self>) {
        routes.on("where", |_g: std::sync::Arc<Self>| async { "special" });
    }
}

async fn app() -> App {
    // Recovery on, as Socket.IO clients ask for sessions: a pattern's namespaces serve them
    // without recovery.
    let config = AppConfig { recovery: Some(Recovery::default()), ..AppConfig::default() };
    App::builder().config(config).gateway(Entries).gateway(Special).build().await.unwrap()
}

async fn client(app: &App, ns: &str) -> TestClient {
    TestClient::builder(app).namespace(ns).session(SessionRequest::New).connect().await.unwrap()
}

#[tokio::test]
async fn every_matching_namespace_is_one_of_its_own() {
    let app = app().await;
    let mut twelve = client(&app, "/entry-12").await;
    let mut twelve_too = client(&app, "/entry-12").await;
    let mut thirteen = client(&app, "/entry-13").await;
    assert_eq!(twelve.request("where", ()).await, Ok(json!("/entry-12")));
    assert_eq!(thirteen.request("where", ()).await, Ok(json!("/entry-13")));
    assert!(app.has_namespace(&"/entry-99".into()));

    // Rooms are scoped to the concrete namespace.
    for c in [&mut twelve, &mut twelve_too, &mut thirteen] {
        c.emit("join", ()).await;
        c.drain();
    }
    twelve.emit("shout", ()).await;
    assert_eq!(twelve_too.event("news").await, Some(json!("/entry-12")));
    let news = |r: &Received| matches!(r, Received::Event { event, .. } if event == "news");
    assert!(!thirteen.drain().iter().any(news), "another namespace's room");

    // The exact namespace comes first.
    let mut special = client(&app, "/entry-0").await;
    assert_eq!(special.request("where", ()).await, Ok(json!("special")));

    // Names the pattern does not match are refused.
    let refused = TestClient::builder(&app).namespace("/entry-x").connect().await.unwrap_err();
    assert_eq!(refused.message, "Invalid namespace");
    // Not in the description: a pattern is no channel address.
    assert!(app.description().namespaces.iter().all(|ns| ns.namespace.as_str() == "/entry-0"));
}

#[tokio::test]
async fn an_invalid_pattern_fails_the_build() {
    struct Broken;
    impl Gateway for Broken {
        fn options(&self) -> GatewayOptions {
            GatewayOptions::new().namespace_pattern("^/entry-(")
        }
        fn register(_routes: &mut Routes<Self>) {}
    }
    let built = App::builder().gateway(Broken).build().await;
    assert!(matches!(built, Err(BuildError::NamespacePattern { .. })), "{built:?}");
}

struct Side;

#[gateway(namespace = "/side", port = 4100)]
impl Side {
    #[subscribe_message("where")]
    async fn where_(&self) -> &'static str {
        "side"
    }
}

#[tokio::test]
async fn a_gateway_on_its_own_port_is_served_by_that_port_s_view_only() {
    let app = App::builder().gateway(Side).gateway(Special).build().await.unwrap();
    assert_eq!(app.ports(), [4100]);
    let side = app.on_port(4100);
    let mut client = TestClient::builder(&side).namespace("/side").connect().await.unwrap();
    assert_eq!(client.request("where", ()).await, Ok(json!("side")));
    // Not on the main port, and the main port's gateways not on its port.
    let refused = TestClient::builder(&app).namespace("/side").connect().await.unwrap_err();
    assert_eq!(refused.message, "Invalid namespace");
    assert!(!side.has_namespace(&"/entry-0".into()));
    assert!(app.has_namespace(&"/entry-0".into()));

    struct Elsewhere;
    impl Gateway for Elsewhere {
        fn options(&self) -> GatewayOptions {
            GatewayOptions::new().namespace("/side").port(4200)
        }
        fn register(_routes: &mut Routes<Self>) {}
    }
    let built = App::builder().gateway(Side).gateway(Elsewhere).build().await;
    assert!(matches!(built, Err(BuildError::PortConflict { .. })), "{built:?}");
}
