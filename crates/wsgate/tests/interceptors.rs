//! Interceptors around handlers (server-wide, gateway, handler; after the guards), answering
//! for the handler or changing its reply; and the fallback for events no route serves.
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use wsgate::adapter::to_payload;
use wsgate::testing::{Received, TestClient};
use wsgate::{
    App, BuildError, Data, EventName, Gateway, GatewayOptions, Guard, Interceptor, MessageContext,
    Next, Reply, Routes, WsError, WsException, gateway,
};

type Log = Arc<Mutex<Vec<String>>>;

/// Writes `name>` before the rest of the chain and `<name` after it.
struct Mark(&'static str, Log);

impl Interceptor for Mark {
    async fn intercept(&self, _ctx: &MessageContext, next: Next<'_>) -> Reply {
        self.1.lock().unwrap().push(format!("{}>", self.0));
        let reply = next.run().await;
        self.1.lock().unwrap().push(format!("<{}", self.0));
        reply
    }
}

/// Answers `cached` from memory after the first time.
#[derive(Default)]
struct Cache(Mutex<Option<Value>>);

impl Interceptor for Cache {
    async fn intercept(&self, _ctx: &MessageContext, next: Next<'_>) -> Reply {
        if let Some(hit) = self.0.lock().unwrap().clone() {
            return Reply::Ack(to_payload(&hit).unwrap());
        }
        let reply = next.run().await;
        if let Reply::Ack(value) = &reply {
            *self.0.lock().unwrap() = serde_json::from_str(value.get()).ok();
        }
        reply
    }
}

/// Wraps an ack's value: `{"value": …}`.
struct Wrap;

impl Interceptor for Wrap {
    async fn intercept(&self, _ctx: &MessageContext, next: Next<'_>) -> Reply {
        match next.run().await {
            Reply::Ack(value) => {
                let inner: Value = serde_json::from_str(value.get()).unwrap();
                Reply::Ack(to_payload(&json!({ "value": inner })).unwrap())
            }
            other => other,
        }
    }
}

struct NoBob;

impl Guard for NoBob {
    async fn can_activate(&self, ctx: &MessageContext) -> Result<(), WsError> {
        match ctx.data().get().contains("bob") {
            true => Err(WsException::new("No Bob.").into()),
            false => Ok(()),
        }
    }
}

struct Shop {
    log: Log,
    calls: Arc<AtomicUsize>,
}

fn shop_options(shop: &Shop) -> GatewayOptions {
    GatewayOptions::new().interceptor(Mark("gateway", shop.log.clone())).guard(NoBob)
}

#[gateway(options = shop_options)]
impl Shop {
    #[subscribe_message("price")]
    #[use_interceptors(Mark("handler", self_log()), Cache::default())]
    async fn price(&self, Data(item): Data<String>) -> u32 {
        self.log.lock().unwrap().push(format!("price {item}"));
        self.calls.fetch_add(1, Ordering::SeqCst);
        42
    }

    #[subscribe_message("wrapped")]
    #[use_interceptors(Wrap)]
    async fn wrapped(&self) -> &'static str {
        "gift"
    }

    /// Whatever no route serves.
    #[fallback]
    async fn anything(&self, event: EventName, Data(data): Data<Value>) -> Value {
        json!({ "unknown": event.as_str(), "data": data })
    }
}

// Handler-level interceptors are built once, at registration: they share this log.
static HANDLER_LOG: std::sync::OnceLock<Log> = std::sync::OnceLock::new();

fn self_log() -> Log {
    HANDLER_LOG.get_or_init(Log::default).clone()
}

async fn app(log: &Log, calls: &Arc<AtomicUsize>) -> App {
    App::builder()
        .interceptor(Mark("server", log.clone()))
        .gateway(Shop { log: log.clone(), calls: calls.clone() })
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn interceptors_wrap_the_handler_outermost_first_and_may_answer_for_it() {
    let log = self_log();
    let calls = Arc::new(AtomicUsize::new(0));
    let app = app(&log, &calls).await;
    let mut client = TestClient::builder(&app).connect().await.unwrap();

    assert_eq!(client.request("price", "tea").await, Ok(json!(42)));
    assert_eq!(
        *log.lock().unwrap(),
        ["server>", "gateway>", "handler>", "price tea", "<handler", "<gateway", "<server"]
    );
    // The cache answers the second time: the handler is not called.
    assert_eq!(client.request("price", "tea").await, Ok(json!(42)));
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // Guards run first: a refused message reaches no interceptor.
    log.lock().unwrap().clear();
    let refused = client.request("price", "bob").await.unwrap_err();
    assert_eq!(refused["message"], "No Bob.");
    assert!(log.lock().unwrap().is_empty(), "{:?}", log.lock().unwrap());

    // An interceptor changes the reply.
    assert_eq!(client.request("wrapped", ()).await, Ok(json!({ "value": "gift" })));
}

#[tokio::test]
async fn the_fallback_serves_unknown_events_in_its_namespace_only() {
    let (log, calls) = (Log::default(), Arc::new(AtomicUsize::new(0)));
    struct Other;
    impl Gateway for Other {
        fn options(&self) -> GatewayOptions {
            GatewayOptions::new().namespace("/other")
        }
        fn register(routes: &mut Routes<Self>) {
            routes.on("ping", |_g: Arc<Self>| async { "pong" });
        }
    }
    let app = App::builder()
        .interceptor(Mark("server", log.clone()))
        .gateway(Shop { log: log.clone(), calls })
        .gateway(Other)
        .build()
        .await
        .unwrap();
    let mut client = TestClient::builder(&app).connect().await.unwrap();
    assert_eq!(
        client.request("nope", json!({ "x": 1 })).await,
        Ok(json!({ "unknown": "nope", "data": { "x": 1 } }))
    );
    assert_eq!(*log.lock().unwrap(), ["server>", "gateway>", "<gateway", "<server"]);
    // The gateway's guard applies to it too.
    let refused = client.request("nope", "bob").await.unwrap_err();
    assert_eq!(refused["message"], "No Bob.");
    // Not in the fallback's description: it serves no event of its own.
    let description = app.description();
    let events: Vec<&str> =
        description.namespace("/").unwrap().handlers.iter().map(|h| h.event.as_str()).collect();
    assert_eq!(events, ["price", "wrapped"]);

    let mut other = TestClient::builder(&app).namespace("/other").connect().await.unwrap();
    other.emit("nope", ()).await;
    let Some(Received::Exception { data, .. }) = other.next().await else { panic!("an exception") };
    assert_eq!(data["message"], "There is no handler for event 'nope'.");
}

#[tokio::test]
async fn two_fallbacks_in_a_namespace_fail_the_build() {
    struct Second;
    impl Gateway for Second {
        fn register(routes: &mut Routes<Self>) {
            routes.fallback(|_g: Arc<Self>| async {});
        }
    }
    let (log, calls) = (Log::default(), Arc::new(AtomicUsize::new(0)));
    let built = App::builder().gateway(Shop { log, calls }).gateway(Second).build().await;
    assert!(matches!(built, Err(BuildError::DuplicateFallback { .. })));
}
