//! The `blog` command line: subcommands, and flags that mirror environment variables.

use std::fmt;
use std::io::IsTerminal;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// `blog [serve|migrate] [flags]`: the reference wsgate application.
#[derive(Debug, Clone, Parser)]
#[command(name = "blog", version, about)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings shared by every subcommand.
    #[command(flatten)]
    pub config: Config,
}

impl Cli {
    /// The subcommand to run, `serve` by default.
    pub fn subcommand(&self) -> Command {
        self.command.unwrap_or(Command::Serve)
    }
}

/// A `blog` subcommand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Migrate the database, then serve the REST API and the gateways (the default).
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
    /// Migrate, then add demo users (password `correct horse battery`), entries and comments.
    Seed,
    /// Print the gateways' TypeScript: event maps for socket.io-client and a typed plain
    /// WebSocket client (`scripts/types` writes it to apps/blog/web/gateways.ts).
    Types,
    /// Print the gateways' AsyncAPI document (as served at `/asyncapi.json`).
    Asyncapi,
}

/// The Redis broker `REDIS_BROKER` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RedisBrokerKind {
    /// Redis Streams (`wsgate_redis::RedisStreamsBroker`).
    Streams,
    /// Redis pub/sub (`wsgate_redis::RedisBroker`).
    Pubsub,
}

/// Settings of the application; each flag can also be given by its environment variable.
#[derive(Clone, PartialEq, Eq, clap::Args)]
pub struct Config {
    /// Port to listen on.
    #[arg(long, env = "PORT", default_value_t = 3000, global = true)]
    pub port: u16,
    /// Address or host name to listen on.
    #[arg(long, env = "HOST", default_value = "127.0.0.1", global = true)]
    pub host: String,
    /// `sqlite://path/to/file.db` (created if missing) or `postgres://user@host/db`.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://data/blog.db", global = true)]
    pub database_url: String,
    /// Secret for signing tokens (HS256). When absent, one is generated on first run and
    /// kept in the data directory as `jwt-secret`.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true, global = true)]
    pub jwt_secret: Option<String>,
    /// `redis://host:port` to share rooms and broadcasts with the other instances of the blog
    /// (run several behind a load balancer); one instance alone needs none.
    #[arg(long, env = "REDIS_URL", global = true)]
    pub redis_url: Option<String>,
    /// How instances share emits through Redis: `streams` (Redis Streams: with recovery on,
    /// one history for all instances, so a client recovers on any of them, and an outage
    /// of Redis loses nothing) or `pubsub` (Redis pub/sub: what is published while Redis is
    /// down is lost; sessions recover only on their own instance).
    #[arg(long, env = "REDIS_BROKER", default_value = "streams", global = true)]
    pub redis_broker: RedisBrokerKind,
    /// With `REDIS_BROKER=streams`: emits kept while Redis is unreachable, appended when it is
    /// back; past it the oldest are dropped (counted, logged, and sessions that missed them
    /// get `recovered: false`).
    #[arg(long, env = "REDIS_BUFFER", default_value_t = 10_000, global = true)]
    pub redis_buffer: usize,
    /// Processes serving the port (`SO_REUSEPORT`): this one starts N-1 copies of itself and
    /// stops them when it stops. Each holds its own connections, so N > 1 needs `REDIS_URL`
    /// (rooms and broadcasts linked through Redis) and a fixed port.
    #[arg(long, env = "PROCESSES", default_value_t = 1, global = true)]
    pub processes: usize,
    /// Comma-separated origins whose pages may use the API and the gateways
    /// (`https://app.example.com,http://localhost:5173`), or `*` for any. The blog's own
    /// origin, and clients that send no `Origin` (not browsers), are always allowed.
    #[arg(long, env = "ALLOWED_ORIGINS", default_value = "", global = true)]
    pub allowed_origins: String,
    /// Live connections one client address may hold; 0 for no limit. Behind a reverse proxy
    /// every connection comes from the proxy: set 0 there and limit at the proxy.
    #[arg(long, env = "MAX_CONNECTIONS_PER_PEER", default_value_t = 256, global = true)]
    pub max_connections_per_peer: usize,
    /// Seconds that shutdown (Ctrl-C, SIGTERM) gives messages being handled to finish and be
    /// answered before the connections close anyway.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value_t = 10, global = true)]
    pub shutdown_timeout: u64,
    /// Seconds a dropped gateway connection's session is kept: a client that comes back
    /// within them gets its rooms and every event it missed (connection state recovery).
    /// 0 turns recovery off.
    #[arg(long, env = "RECOVERY_WINDOW", default_value_t = 120, global = true)]
    pub recovery_window: u64,
    /// Events each namespace's recovery history holds at most.
    #[arg(long, env = "RECOVERY_HISTORY", default_value_t = 10_000, global = true)]
    pub recovery_history: usize,
    /// permessage-deflate on both transports' websockets, for messages of at least this many
    /// bytes (e.g. 1024); off when absent. Clients that do not offer it are served as before.
    #[arg(long, env = "WS_COMPRESSION", global = true)]
    pub ws_compression: Option<usize>,
    /// Seconds of quiet after which a websocket connection sleeps (its task ends; it wakes for
    /// the next frame, event or ping); 0 keeps connections awake. See
    /// `WsAdapter::hibernate_after`.
    #[arg(long, env = "HIBERNATE_AFTER", default_value_t = wsgate_ws::DEFAULT_HIBERNATE_AFTER.as_secs(), global = true)]
    pub hibernate_after: u64,
    /// Microseconds a runtime worker with nothing to do waits at first before it sleeps, when
    /// clients keep several messages in flight (fewer wake-ups per message); 0 turns it off.
    /// See `wsgate::runtime::Linger`.
    #[arg(long, env = "WSGATE_LINGER_US", default_value_t = 20, global = true)]
    pub linger_us: u64,
    /// The longest a lingering worker waits, in microseconds: it doubles its wait up to this
    /// while longer waits gather more connections' messages (at most this much added to a
    /// message's wait). Below `--linger-us`, the wait stays `--linger-us`.
    #[arg(long, env = "WSGATE_LINGER_MAX_US", default_value_t = 320, global = true)]
    pub linger_max_us: u64,
    /// Serves the Socket.IO Admin UI at `/admin-ui/` and its `/admin` namespace, behind
    /// `ADMIN_UI_USERNAME` and `ADMIN_UI_PASSWORD_HASH` (or `ADMIN_UI_PASSWORD`). Off by default.
    /// (`ADMIN_UI`: `true`, `1`, `yes` or `on`.)
    #[arg(long, env = "ADMIN_UI", global = true, value_parser = clap::builder::BoolishValueParser::new())]
    pub admin_ui: bool,
    /// The Admin UI's username.
    #[arg(long, env = "ADMIN_UI_USERNAME", default_value = "admin", global = true)]
    pub admin_ui_username: String,
    /// The bcrypt hash of the Admin UI's password (`$2b$10$…`).
    #[arg(long, env = "ADMIN_UI_PASSWORD_HASH", hide_env_values = true, global = true)]
    pub admin_ui_password_hash: Option<String>,
    /// The Admin UI's password, hashed at start, when no hash is given.
    #[arg(long, env = "ADMIN_UI_PASSWORD", hide_env_values = true, global = true)]
    pub admin_ui_password: Option<String>,
    /// The Admin UI shows everything and changes nothing: no join, leave, disconnect or emit.
    /// (`ADMIN_UI_READONLY`: `true`, `1`, `yes` or `on`.)
    #[arg(long, env = "ADMIN_UI_READONLY", global = true, value_parser = clap::builder::BoolishValueParser::new())]
    pub admin_ui_readonly: bool,
}

impl Config {
    /// The gateways' limits these settings give.
    pub fn gateway_config(&self) -> wsgate::AppConfig {
        wsgate::AppConfig {
            max_connections_per_peer: (self.max_connections_per_peer > 0)
                .then_some(self.max_connections_per_peer),
            drain_timeout: self.shutdown_timeout(),
            recovery: (self.recovery_window > 0).then(|| wsgate::Recovery {
                window: std::time::Duration::from_secs(self.recovery_window),
                max_events: self.recovery_history,
            }),
            ..wsgate::AppConfig::default()
        }
    }

    /// The websockets' compression these settings give.
    pub fn compression(&self) -> Option<wsgate_ws::Compression> {
        self.ws_compression.map(|threshold| wsgate_ws::Compression::new().threshold(threshold))
    }

    /// How long shutdown waits for messages in flight.
    pub fn shutdown_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.shutdown_timeout)
    }

    /// The defaults, as `blog` with no flags and no environment would use them.
    pub fn new(database_url: impl Into<String>) -> Self {
        Self {
            port: 3000,
            host: "127.0.0.1".into(),
            database_url: database_url.into(),
            jwt_secret: None,
            redis_url: None,
            redis_broker: RedisBrokerKind::Streams,
            redis_buffer: 10_000,
            processes: 1,
            allowed_origins: String::new(),
            max_connections_per_peer: 256,
            shutdown_timeout: 10,
            recovery_window: 120,
            recovery_history: 10_000,
            ws_compression: None,
            hibernate_after: wsgate_ws::DEFAULT_HIBERNATE_AFTER.as_secs(),
            linger_us: 20,
            linger_max_us: 320,
            admin_ui: false,
            admin_ui_username: "admin".into(),
            admin_ui_password_hash: None,
            admin_ui_password: None,
            admin_ui_readonly: false,
        }
    }

    /// The Admin UI's credentials with `--admin-ui`, `None` without; an error when it is on
    /// without a password, or with a hash that is not bcrypt's.
    pub fn admin_ui_credentials(&self) -> anyhow::Result<Option<wsgate_admin::Credentials>> {
        if !self.admin_ui {
            return Ok(None);
        }
        let username = self.admin_ui_username.clone();
        let credentials = match (&self.admin_ui_password_hash, &self.admin_ui_password) {
            (Some(hash), _) => wsgate_admin::Credentials::new(username, hash.trim())?,
            (None, Some(password)) => wsgate_admin::Credentials::from_password(username, password)?,
            (None, None) => anyhow::bail!(
                "--admin-ui needs a password: set ADMIN_UI_PASSWORD_HASH (bcrypt) or ADMIN_UI_PASSWORD"
            ),
        };
        Ok(Some(credentials))
    }
}

// By hand, so that the secret never reaches a log line.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("port", &self.port)
            .field("host", &self.host)
            .field("database_url", &redact_password(&self.database_url))
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| "<redacted>"))
            .field("redis_url", &self.redis_url.as_deref().map(redact_password))
            .field("redis_broker", &self.redis_broker)
            .field("redis_buffer", &self.redis_buffer)
            .field("allowed_origins", &self.allowed_origins)
            .field("max_connections_per_peer", &self.max_connections_per_peer)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("recovery_window", &self.recovery_window)
            .field("recovery_history", &self.recovery_history)
            .field("ws_compression", &self.ws_compression)
            .field("hibernate_after", &self.hibernate_after)
            .field("linger_us", &self.linger_us)
            .field("linger_max_us", &self.linger_max_us)
            .field("admin_ui", &self.admin_ui)
            .field("admin_ui_username", &self.admin_ui_username)
            .field(
                "admin_ui_password_hash",
                &self.admin_ui_password_hash.as_ref().map(|_| "<redacted>"),
            )
            .field("admin_ui_password", &self.admin_ui_password.as_ref().map(|_| "<redacted>"))
            .field("admin_ui_readonly", &self.admin_ui_readonly)
            .finish()
    }
}

/// The URL with any password replaced by `***` (`postgres://u:***@host/db`).
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else { return url.to_owned() };
    match rest[..at].split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***{}", &rest[at..]),
        None => url.to_owned(),
    }
}

/// Logs to stderr with `tracing`, filtered by `RUST_LOG` (default `info`), in colour only on
/// a terminal and without `NO_COLOR`.
pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    // A second call (tests) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_well_formed() {
        <Cli as CommandFactory>::command().debug_assert();
    }

    #[test]
    fn serve_is_the_default_and_flags_go_anywhere() {
        let cli = Cli::try_parse_from(["blog", "--port", "4000"]).ok();
        assert_eq!(cli.as_ref().map(Cli::subcommand), Some(Command::Serve));
        assert_eq!(cli.map(|c| c.config.port), Some(4000));
        let cli =
            Cli::try_parse_from(["blog", "migrate", "--database-url", "sqlite::memory:"]).ok();
        assert_eq!(cli.as_ref().map(Cli::subcommand), Some(Command::Migrate));
        assert_eq!(cli.map(|c| c.config.database_url).as_deref(), Some("sqlite::memory:"));
    }

    #[test]
    fn debug_hides_secrets() {
        let mut config = Config::new("postgres://blog:hunter2@db:5432/blog");
        config.jwt_secret = Some("s3cret".into());
        let text = format!("{config:?}");
        assert!(!text.contains("hunter2") && !text.contains("s3cret"), "{text}");
        assert!(text.contains("postgres://blog:***@db:5432/blog"), "{text}");
        assert_eq!(redact_password("sqlite://data/blog.db"), "sqlite://data/blog.db");
        assert_eq!(redact_password("postgres://u@h/db"), "postgres://u@h/db");
    }
}
