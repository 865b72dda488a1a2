//! Shared by the blog's integration tests: the real app, served by [`blog::run`] on a loopback
//! port, over a fresh SQLite file (or a fresh PostgreSQL database), with a fixed JWT secret.
//!
//! Each test binary uses a part of this module.
#![allow(dead_code, unreachable_pub)]

pub mod flows;

use std::io::Write as _;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use blog::{AppState, Config};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::PgConnectOptions;
use tempfile::TempDir;
use tokio::net::TcpListener;

/// The JWT secret every test app signs with, so that tests can forge tokens.
pub const JWT_SECRET: &str = "blog-tests-secret-blog-tests-secret";

/// The password [`TestApp::register`] gives every user.
pub const PASSWORD: &str = "correct horse battery";

/// A running blog. The server task ends with the test's runtime.
pub struct TestApp {
    /// Where it listens.
    pub addr: SocketAddr,
    /// `http://{addr}`.
    pub base_url: String,
    /// The app's state: store, keys and the wsgate server handle.
    pub state: AppState,
    /// A client for the REST API.
    pub client: reqwest::Client,
    _dir: TempDir,
}

/// The blog over a new SQLite file in a temporary directory.
pub async fn spawn() -> TestApp {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}", dir.path().join("blog.db").display());
    spawn_in(dir, &url, |_| {}).await
}

/// The blog over a new SQLite file, with settings changed by `configure`.
pub async fn spawn_configured(configure: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}", dir.path().join("blog.db").display());
    spawn_in(dir, &url, configure).await
}

/// The blog over the database at `database_url` (migrated at start).
pub async fn spawn_with(database_url: &str) -> TestApp {
    spawn_in(tempfile::tempdir().expect("temporary directory"), database_url, |_| {}).await
}

async fn spawn_in(
    dir: TempDir,
    database_url: &str,
    configure: impl FnOnce(&mut Config),
) -> TestApp {
    init_logging();
    let mut config = Config::new(database_url);
    config.jwt_secret = Some(JWT_SECRET.into());
    configure(&mut config);
    let state = blog::open(&config).await.expect("open the app");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    let served = state.clone();
    tokio::spawn(async move {
        if let Err(e) = blog::run(listener, served, std::future::pending()).await {
            eprintln!("test server failed: {e:#}");
        }
    });
    TestApp {
        addr,
        base_url: format!("http://{addr}"),
        state,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("HTTP client"),
        _dir: dir,
    }
}

/// Logs to the test's captured output, filtered by `RUST_LOG` (default `warn`).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

impl TestApp {
    /// `http://{addr}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// `ws://{addr}{path}`, for WebSocket clients.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// POSTs `body` as JSON, with a bearer token if given; the status and the JSON answer.
    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (StatusCode, Value) {
        let mut req = self.client.post(self.url(path)).json(body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        answer(req).await
    }

    /// POSTs a raw body declared as JSON (for malformed JSON).
    pub async fn post_raw(&self, path: &str, body: &'static str) -> (StatusCode, Value) {
        let req = self.client.post(self.url(path)).header("content-type", "application/json");
        answer(req.body(body)).await
    }

    /// GETs `path`, with a bearer token if given.
    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut req = self.client.get(self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        answer(req).await
    }

    /// PUTs `body` as JSON, with a bearer token if given.
    pub async fn put(&self, path: &str, token: Option<&str>, body: &Value) -> (StatusCode, Value) {
        self.request(Method::PUT, path, token, Some(body)).await
    }

    /// DELETEs `path`, with a bearer token if given; the answer is `null` when empty.
    pub async fn delete(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.request(Method::DELETE, path, token, None).await
    }

    /// Any method, with a bearer token and a JSON body if given.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        answer(req).await
    }

    /// Sends a raw body declared as JSON (for malformed JSON) with a bearer token.
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: &'static str,
    ) -> (StatusCode, Value) {
        let req = self.client.request(method, self.url(path)).bearer_auth(token);
        answer(req.header("content-type", "application/json").body(body)).await
    }

    /// Registers `email` with [`PASSWORD`]; the token and the user.
    pub async fn register(&self, email: &str) -> (String, Value) {
        let body = json!({
            "email": email, "password": PASSWORD, "firstName": "Ada", "lastName": "Lovelace"
        });
        let (status, body) = self.post("/auth/register", None, &body).await;
        assert_eq!(status, StatusCode::CREATED, "register {email}: {body}");
        let token = body["token"].as_str().expect("a token").to_owned();
        (token, body["user"].clone())
    }

    /// Creates an entry as the token's user; the entry.
    pub async fn create_entry(&self, token: &str, title: &str) -> Value {
        let body = json!({ "title": title, "content": format!("About {title}.") });
        let (status, entry) = self.post("/entries", Some(token), &body).await;
        assert_eq!(status, StatusCode::CREATED, "create entry: {entry}");
        entry
    }

    /// Comments on entry `entry_id` as the token's user; the comment.
    pub async fn create_comment(&self, token: &str, entry_id: i64, body: &str) -> Value {
        let path = format!("/entries/{entry_id}/comments");
        let (status, comment) = self.post(&path, Some(token), &json!({ "body": body })).await;
        assert_eq!(status, StatusCode::CREATED, "create comment: {comment}");
        comment
    }
}

/// The answer of a failed request: the status and `{statusCode, message}`.
pub fn error(status: StatusCode, message: &str) -> (StatusCode, Value) {
    (status, json!({ "statusCode": status.as_u16(), "message": message }))
}

/// The `id` of an entity's JSON.
pub fn id(value: &Value) -> i64 {
    value["id"].as_i64().unwrap_or_else(|| panic!("no id in {value}"))
}

async fn answer(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let res = req.send().await.expect("request sent");
    let status = res.status();
    let text = res.text().await.expect("response body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"))
    };
    (status, body)
}

/// A PostgreSQL database made for one test, dropped (with its connections) when this is.
pub struct TestDatabase {
    /// The URL of the new database.
    pub url: String,
}

/// The PostgreSQL server of `TEST_POSTGRES_URL`, else of `DATABASE_URL` if that is a
/// `postgres://` URL, else `postgres://postgres@127.0.0.1:5432/test`: a new, uniquely named
/// database on it, or `None` after a loud notice when nothing listens there. With `CI=true`
/// an unreachable server fails the test instead.
pub async fn postgres_database(test: &str) -> Option<TestDatabase> {
    let base = std::env::var("TEST_POSTGRES_URL")
        .ok()
        .or_else(|| std::env::var("DATABASE_URL").ok().filter(|u| u.starts_with("postgres")))
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into());
    let options = PgConnectOptions::from_str(&base).expect("TEST_POSTGRES_URL is a postgres URL");
    let target = (options.get_host().to_owned(), options.get_port());
    let reachable = tokio::time::timeout(
        Duration::from_secs(3),
        tokio::net::TcpStream::connect((target.0.as_str(), target.1)),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    if !reachable {
        let message = format!(
            "PostgreSQL is not reachable at {}:{}.\n\
             Start one, e.g. `pg_ctlcluster --skip-systemctl-redirect 15 main start` (Debian) or\n\
             `docker run -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust postgres:16`, or set\n\
             TEST_POSTGRES_URL to a server where that user may CREATE DATABASE.",
            target.0, target.1
        );
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{message}");
        }
        // Straight to stderr: the test harness captures `eprintln!` of passing tests.
        let rule = "=".repeat(78);
        let _ = writeln!(std::io::stderr(), "\n{rule}\nSKIPPED {test}: {message}\n{rule}\n");
        return None;
    }
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let name = format!("blog_test_{}_{}", std::process::id(), nanos);
    let url = with_database(&base, &name);
    sqlx::Postgres::create_database(&url).await.expect("CREATE DATABASE for the test");
    Some(TestDatabase { url })
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which can't be blocked on: a thread of its own.
        let url = self.url.clone();
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(sqlx::Postgres::force_drop_database(&url)).map_err(std::io::Error::other)
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop the test database {}: {dropped:?}", self.url);
        }
    }
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let authority = base.find("://").map_or(0, |i| i + 3);
    let path = base[authority..].find('/').map_or(base.len(), |i| authority + i);
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    format!("{}/{name}{query}", &base[..path])
}

/// The next text frame of a WebSocket client, as JSON; fails after 5 s.
pub async fn recv_json<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::StreamExt as _;
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a message within 5 s")
            .expect("connection open")
            .expect("a frame");
        if let tokio_tungstenite::tungstenite::Message::Text(text) = frame {
            return serde_json::from_str(&text).expect("JSON");
        }
    }
}
