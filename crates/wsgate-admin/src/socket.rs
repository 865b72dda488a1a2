//! What the UI shows of a socket: its handshake as seen at connection time, its rooms.

use serde_json::{Map, Value, json};
use wsgate::{ConnectMiddleware, Connection, Handshake, Refusal};

/// Headers and query parameters whose values are secrets: shown as `[redacted]`.
const SECRET_HEADERS: [&str; 3] = ["authorization", "cookie", "proxy-authorization"];
const SECRET_PARAMS: [&str; 3] = ["token", "auth_token", "access_token"];
const REDACTED: &str = "[redacted]";

/// A connection's handshake as the UI shows it, kept as an extension by [`Snapshot`].
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    /// `websocket` or `polling` for Socket.IO, as the client opened it; `ws` for a plain
    /// WebSocket (wsgate's transport name).
    pub(crate) transport: &'static str,
    handshake: Value,
}

/// Server-wide middleware that notes each handshake for the UI; refuses nothing.
pub(crate) struct Snapshot;

impl ConnectMiddleware for Snapshot {
    async fn handle(&self, handshake: &mut Handshake) -> Result<(), Refusal> {
        let seen = Seen::of(handshake);
        handshake.extensions.insert(seen);
        Ok(())
    }
}

impl Seen {
    pub(crate) fn of(hs: &Handshake) -> Self {
        let upgraded = hs.header("upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
        let transport = match hs.transport {
            "socket.io" if upgraded => "websocket",
            "socket.io" => "polling",
            other => other,
        };
        let mut headers = Map::new();
        for (name, value) in &hs.headers {
            let value = if SECRET_HEADERS.contains(&name.as_str()) {
                REDACTED.to_owned()
            } else {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            };
            headers.insert(name.as_str().to_owned(), Value::String(value));
        }
        let mut query = Map::new();
        let raw_query = hs.query.as_deref().unwrap_or("");
        for pair in raw_query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = if SECRET_PARAMS.contains(&name) { REDACTED } else { value };
            query.insert(name.to_owned(), Value::String(value.to_owned()));
        }
        let address = hs
            .header("cf-connecting-ip")
            .or_else(|| hs.header("x-forwarded-for"))
            .map(str::to_owned)
            .or_else(|| hs.peer.map(|p| p.ip().to_string()))
            .unwrap_or_default();
        let now = time::OffsetDateTime::now_utc();
        let issued = now.unix_timestamp_nanos() / 1_000_000;
        let path = if hs.transport == "socket.io" { "/socket.io/" } else { hs.namespace.as_str() };
        let redacted_query: Vec<String> =
            query.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect();
        let handshake = json!({
            "address": address,
            "headers": headers,
            "query": query,
            "issued": issued as i64,
            "secure": hs.header("x-forwarded-proto") == Some("https"),
            "time": timestamp(now),
            "url": format!("{path}?{}", redacted_query.join("&")),
            "xdomain": hs.header("origin").is_some(),
        });
        Self { transport, handshake }
    }
}

/// `conn` as the Admin UI's `SerializedSocket`: id, clientId, transport, nsp, data,
/// handshake, rooms (its own id first, as a Socket.IO socket is in the room of its id).
pub(crate) fn serialize(conn: &Connection) -> Value {
    let id = conn.id().to_string();
    let seen = conn.extension::<Seen>();
    let mut rooms = vec![id.clone()];
    rooms.extend(conn.rooms().iter().map(|r| r.as_str().to_owned()));
    json!({
        "id": id,
        "clientId": id,
        "transport": seen.map_or(conn.transport(), |s| s.transport),
        "nsp": conn.namespace().as_str(),
        "data": {},
        "handshake": seen.map_or(Value::Null, |s| s.handshake.clone()),
        "rooms": rooms,
    })
}

/// The time as Socket.IO's JSON has a `Date`: RFC 3339 in UTC with milliseconds.
pub(crate) fn timestamp(at: time::OffsetDateTime) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    at.format(&format).unwrap_or_default()
}

/// Now, as [`timestamp`] writes it.
pub(crate) fn now() -> String {
    timestamp(time::OffsetDateTime::now_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_and_the_transport_named() {
        let mut hs = Handshake::new("/", "socket.io");
        hs.query = Some("EIO=4&transport=polling&token=abc.def".into());
        hs.headers.insert("authorization", "Bearer xyz".parse().unwrap());
        hs.headers.insert("user-agent", "node".parse().unwrap());
        let seen = Seen::of(&hs);
        assert_eq!(seen.transport, "polling");
        assert_eq!(seen.handshake["query"]["token"], REDACTED);
        assert_eq!(seen.handshake["query"]["EIO"], "4");
        assert_eq!(seen.handshake["headers"]["authorization"], REDACTED);
        assert_eq!(seen.handshake["headers"]["user-agent"], "node");
        assert!(!seen.handshake.to_string().contains("xyz"));
        assert!(!seen.handshake.to_string().contains("abc.def"));
        hs.headers.insert("upgrade", "websocket".parse().unwrap());
        assert_eq!(Seen::of(&hs).transport, "websocket");
        assert_eq!(Seen::of(&Handshake::new("/ws", "ws")).transport, "ws");
    }

    #[test]
    fn timestamps_read_as_javascript_dates() {
        let at = time::macros::datetime!(2024-05-06 07:08:09.123 UTC);
        assert_eq!(timestamp(at), "2024-05-06T07:08:09.123Z");
    }
}
