//! Small typed names: events, namespaces, rooms, connection ids, ack ids.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use smol_str::SmolStr;

macro_rules! shared_name {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name($inner);

        impl $name {
            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Ok(Self::from(&*name))
            }
        }
    };
}

shared_name!(
    /// The name of an event, such as `showComment` (Nest's `@SubscribeMessage` pattern).
    ///
    /// Names of up to 23 bytes are held inline, longer ones behind an `Arc`: every message
    /// carries one (read from the frame) and every reply another, and neither allocates.
    EventName(SmolStr)
);
shared_name!(
    /// A room that connections join and broadcasts address, such as `entry:2`.
    RoomId(Arc<str>)
);
shared_name!(
    /// A namespace: a Socket.IO namespace, or a path for plain WebSocket. Always starts with `/`.
    Namespace(Arc<str>)
);

impl<T: AsRef<str>> From<T> for EventName {
    fn from(s: T) -> Self {
        Self(SmolStr::new(s))
    }
}

impl<T: AsRef<str>> From<T> for RoomId {
    fn from(s: T) -> Self {
        Self(Arc::from(s.as_ref()))
    }
}

impl Namespace {
    /// The default namespace, `/`: one shared name, not a copy per connection.
    pub fn root() -> Self {
        static ROOT: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from("/"));
        Self(ROOT.clone())
    }

    /// A namespace from a path; a missing leading `/` is added and a trailing one removed.
    pub fn new(path: &str) -> Self {
        let trimmed = path.trim_matches('/');
        if trimmed.is_empty() { Self::root() } else { Self(Arc::from(format!("/{trimmed}"))) }
    }
}

impl Default for Namespace {
    fn default() -> Self {
        Self::root()
    }
}

impl<T: AsRef<str>> From<T> for Namespace {
    fn from(s: T) -> Self {
        Self::new(s.as_ref())
    }
}

/// The id of one connection: a counter under a random per-server prefix, so that ids are
/// unique across the instances of a deployment too (see [`crate::broker::Broker`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct ConnectionId(pub u64);

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The id a client gave a message to ask for an acknowledgement.
///
/// Plain WebSocket clients send a number or a string; Socket.IO uses numbers.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AckId {
    /// A numeric id.
    Number(u64),
    /// A string id.
    Text(Arc<str>),
}

impl fmt::Display for AckId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Text(s) => f.write_str(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_normalised() {
        assert_eq!(Namespace::new("").as_str(), "/");
        assert_eq!(Namespace::new("/").as_str(), "/");
        assert_eq!(Namespace::new("chat").as_str(), "/chat");
        assert_eq!(Namespace::new("/chat/").as_str(), "/chat");
    }

    #[test]
    fn event_names_short_or_long_are_the_text_they_were_made_of() {
        let long = "an event name longer than twenty-three bytes";
        for text in ["echo", "showComment", "x".repeat(23).as_str(), long] {
            let name = EventName::from(text);
            assert_eq!(name.as_str(), text);
            assert_eq!(name.clone(), name);
            let read: EventName =
                serde_json::from_str(&serde_json::to_string(&name).unwrap()).unwrap();
            assert_eq!(read, name);
        }
        let routes: std::collections::HashMap<EventName, u8> = [(EventName::from(long), 1)].into();
        assert_eq!(routes.get(long), Some(&1), "looked up by &str");
    }

    #[test]
    fn ack_ids_accept_numbers_and_strings() {
        let n: AckId = serde_json::from_str("7").unwrap();
        assert_eq!(n, AckId::Number(7));
        let s: AckId = serde_json::from_str("\"a1\"").unwrap();
        assert_eq!(s, AckId::Text("a1".into()));
        assert!(serde_json::from_str::<AckId>("-1").is_err());
        assert!(serde_json::from_str::<AckId>("{}").is_err());
    }
}
