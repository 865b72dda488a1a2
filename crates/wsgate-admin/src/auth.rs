//! Who may open the admin namespace: a username and a bcrypt hash, as the Admin UI's own
//! server keeps them, and the session ids handed to a UI that logged in.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use wsgate::{ConnectMiddleware, Handshake, Refusal};

/// Why the UI's login was refused, in the words the UI knows (it reopens its login form).
pub const INVALID_CREDENTIALS: &str = "invalid credentials";

/// How many UI sessions are remembered; the oldest is forgotten first (its UI logs in again).
const MAX_SESSIONS: usize = 1024;

/// The one account of the admin namespace: a username and the bcrypt hash of its password.
#[derive(Clone)]
pub struct Credentials {
    username: String,
    password_hash: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).finish_non_exhaustive()
    }
}

/// The credentials given could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The hash is not a bcrypt hash (`$2b$12$…`).
    #[error("the password hash must be a bcrypt hash ($2b$…): {0}")]
    NotBcrypt(bcrypt::BcryptError),
    /// The username is empty.
    #[error("the username must not be empty")]
    EmptyUsername,
    /// The password could not be hashed.
    #[error("the password could not be hashed: {0}")]
    Hash(bcrypt::BcryptError),
}

impl Credentials {
    /// `username` with the bcrypt hash of its password (what `bcrypt.hashSync(password, 10)`
    /// or `htpasswd -bnBC 10 "" password` prints).
    pub fn new(
        username: impl Into<String>,
        password_hash: impl Into<String>,
    ) -> Result<Self, CredentialsError> {
        let (username, password_hash) = (username.into(), password_hash.into());
        if username.is_empty() {
            return Err(CredentialsError::EmptyUsername);
        }
        password_hash.parse::<bcrypt::HashParts>().map_err(CredentialsError::NotBcrypt)?;
        Ok(Self { username, password_hash })
    }

    /// `username` with `password`, hashed here at bcrypt's default cost.
    pub fn from_password(
        username: impl Into<String>,
        password: &str,
    ) -> Result<Self, CredentialsError> {
        Self::with_cost(username, password, bcrypt::DEFAULT_COST)
    }

    /// As [`Credentials::from_password`] at another cost (4 to 31; tests use 4).
    pub fn with_cost(
        username: impl Into<String>,
        password: &str,
        cost: u32,
    ) -> Result<Self, CredentialsError> {
        let hash = bcrypt::hash(password, cost).map_err(CredentialsError::Hash)?;
        Self::new(username, hash)
    }

    /// Whether `username` and `password` are these.
    pub fn verify(&self, username: &str, password: &str) -> bool {
        // The hash is checked whatever the username, so that timing tells neither apart.
        let matches = bcrypt::verify(password, &self.password_hash).unwrap_or(false);
        matches && username == self.username
    }
}

/// The session ids of UIs that logged in on this instance, newest last, bounded.
#[derive(Default)]
pub(crate) struct Sessions {
    ids: Mutex<(HashSet<String>, VecDeque<String>)>,
}

impl Sessions {
    fn contains(&self, id: &str) -> bool {
        lock(&self.ids).0.contains(id)
    }

    fn open(&self) -> Option<String> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).ok()?;
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut ids = lock(&self.ids);
        if ids.1.len() >= MAX_SESSIONS
            && let Some(old) = ids.1.pop_front()
        {
            ids.0.remove(&old);
        }
        ids.0.insert(id.clone());
        ids.1.push_back(id.clone());
        Some(id)
    }
}

/// The session id a UI gets after logging in, to log in again without its password.
#[derive(Clone, Debug)]
pub(crate) struct NewSession(pub(crate) String);

/// The admin namespace's middleware: `auth: {sessionId}` of a known session, or
/// `auth: {username, password}` matching the credentials.
#[derive(Clone)]
pub(crate) struct AdminAuth {
    pub(crate) credentials: Credentials,
    pub(crate) sessions: Arc<Sessions>,
}

impl ConnectMiddleware for AdminAuth {
    async fn handle(&self, handshake: &mut Handshake) -> Result<(), Refusal> {
        if handshake.transport != wsgate_socketio_name() {
            return Err(Refusal::unauthorized(
                "The admin namespace is served over Socket.IO only.",
            ));
        }
        let auth = handshake.auth.as_ref();
        let field = |name: &str| auth.and_then(|a| a.get(name)).and_then(|v| v.as_str());
        if let Some(id) = field("sessionId")
            && self.sessions.contains(id)
        {
            return Ok(());
        }
        let (Some(username), Some(password)) = (field("username"), field("password")) else {
            return Err(Refusal::unauthorized(INVALID_CREDENTIALS));
        };
        let (username, password) = (username.to_owned(), password.to_owned());
        let credentials = self.credentials.clone();
        // bcrypt takes tens of milliseconds on purpose: off the runtime's threads.
        let matches = tokio::task::spawn_blocking(move || credentials.verify(&username, &password))
            .await
            .unwrap_or(false);
        if !matches {
            tracing::info!("admin login refused: invalid credentials");
            return Err(Refusal::unauthorized(INVALID_CREDENTIALS));
        }
        if let Some(id) = self.sessions.open() {
            handshake.extensions.insert(NewSession(id));
        }
        Ok(())
    }
}

/// The Socket.IO adapter's transport name (`wsgate_socketio::TRANSPORT`), without depending on it.
const fn wsgate_socketio_name() -> &'static str {
    "socket.io"
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bcrypt_hash_is_required_and_checked() {
        assert!(matches!(Credentials::new("admin", "secret"), Err(CredentialsError::NotBcrypt(_))));
        assert!(matches!(
            Credentials::with_cost("", "pw", 4),
            Err(CredentialsError::EmptyUsername)
        ));
        let c = Credentials::with_cost("admin", "s3cret", 4).unwrap();
        assert!(c.verify("admin", "s3cret"));
        assert!(!c.verify("admin", "wrong"));
        assert!(!c.verify("root", "s3cret"));
        // The example hash of the Admin UI's README ("changeit").
        let js = Credentials::new(
            "admin",
            "$2b$10$heqvAkYMez.Va6Et2uXInOnkCT6/uQj1brkrbyG3LpopDklcq7ZOS",
        )
        .unwrap();
        assert!(js.verify("admin", "changeit"));
        assert!(format!("{c:?}").find("$2").is_none(), "the hash stays out of logs");
    }

    #[test]
    fn sessions_are_bounded() {
        let sessions = Sessions::default();
        let first = sessions.open().unwrap();
        assert!(sessions.contains(&first));
        for _ in 0..MAX_SESSIONS {
            sessions.open();
        }
        assert!(!sessions.contains(&first));
        assert_eq!(lock(&sessions.ids).1.len(), MAX_SESSIONS);
    }
}
