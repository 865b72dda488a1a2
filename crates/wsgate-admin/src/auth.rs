//! Who may open the admin namespace: a username and a bcrypt hash, as the Admin UI's own
//! server keeps them, and the session ids handed to a UI that logged in: signed with a key
//! drawn from the credentials, so that every instance configured alike accepts them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use wsgate::{ConnectMiddleware, Handshake, Refusal};

/// Why the UI's login was refused, in the words the UI knows (it reopens its login form).
pub const INVALID_CREDENTIALS: &str = "invalid credentials";

/// How long a UI's session id logs it in again without its password (as the Admin UI's
/// `RedisStore` keeps them).
pub const SESSION_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// The one account of the admin namespace: a username and the bcrypt hash of its password.
#[derive(Clone)]
pub struct Credentials {
    username: String,
    password_hash: String,
    /// Signs session ids: from the username and the hash (or the password it was made
    /// from), so that instances given the same settings agree on it.
    session_key: [u8; 32],
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
        let session_key = session_key(&username, &password_hash);
        Ok(Self { username, password_hash, session_key })
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
        let username = username.into();
        let hash = bcrypt::hash(password, cost).map_err(CredentialsError::Hash)?;
        // Each instance salts its own hash: the key comes from the password instead.
        let session_key = session_key(&username, password);
        Ok(Self { session_key, ..Self::new(username, hash)? })
    }

    /// Whether `username` and `password` are these.
    pub fn verify(&self, username: &str, password: &str) -> bool {
        // The hash is checked whatever the username, so that timing tells neither apart.
        let matches = bcrypt::verify(password, &self.password_hash).unwrap_or(false);
        matches && username == self.username
    }

    /// A new session id: `<expiry>.<nonce>.<signature>`, valid for [`SESSION_LIFETIME`].
    fn open_session(&self, now: SystemTime) -> Option<String> {
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).ok()?;
        let expiry = (now + SESSION_LIFETIME).duration_since(UNIX_EPOCH).ok()?.as_secs();
        let body = format!("{expiry}.{}", hex(&nonce));
        Some(format!("{body}.{}", hex(&self.mac(&body)?.finalize().into_bytes())))
    }

    /// Whether `id` is a session id these credentials signed, not expired at `now`.
    fn accepts_session(&self, id: &str, now: SystemTime) -> bool {
        let Some((body, signature)) = id.rsplit_once('.') else { return false };
        let Some(signature) = unhex(signature) else { return false };
        let Some(mac) = self.mac(body) else { return false };
        if mac.verify_slice(&signature).is_err() {
            return false;
        }
        let expiry = body.split('.').next().and_then(|e| e.parse::<u64>().ok());
        let now = now.duration_since(UNIX_EPOCH).map_or(u64::MAX, |d| d.as_secs());
        expiry.is_some_and(|expiry| now < expiry)
    }

    fn mac(&self, body: &str) -> Option<Hmac<Sha256>> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.session_key).ok()?;
        mac.update(body.as_bytes());
        Some(mac)
    }
}

fn session_key(username: &str, secret: &str) -> [u8; 32] {
    let mut digest = Sha256::new();
    for part in ["wsgate-admin sessions", username, secret] {
        digest.update(part.as_bytes());
        digest.update([0]);
    }
    digest.finalize().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 128 {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// The session id a UI gets after logging in, to log in again without its password.
#[derive(Clone, Debug)]
pub(crate) struct NewSession(pub(crate) String);

/// The admin namespace's middleware: `auth: {sessionId}` of a known session, or
/// `auth: {username, password}` matching the credentials.
#[derive(Clone)]
pub(crate) struct AdminAuth {
    pub(crate) credentials: Credentials,
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
            && self.credentials.accepts_session(id, SystemTime::now())
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
        if let Some(id) = self.credentials.open_session(SystemTime::now()) {
            handshake.extensions.insert(NewSession(id));
        }
        Ok(())
    }
}

/// The Socket.IO adapter's transport name (`wsgate_socketio::TRANSPORT`), without depending on it.
const fn wsgate_socketio_name() -> &'static str {
    "socket.io"
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
    fn session_ids_are_signed_shared_by_alike_instances_and_expire() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let (a, b) =
            (Credentials::new("admin", &hash).unwrap(), Credentials::new("admin", &hash).unwrap());
        let now = SystemTime::now();
        let id = a.open_session(now).unwrap();
        assert!(a.accepts_session(&id, now));
        assert!(b.accepts_session(&id, now), "another instance with the same settings");
        assert!(!a.accepts_session(&id, now + SESSION_LIFETIME));
        // From the password: instances salt their own hashes, and still agree.
        let (c, d) = (
            Credentials::with_cost("admin", "pw", 4).unwrap(),
            Credentials::with_cost("admin", "pw", 4).unwrap(),
        );
        assert!(d.accepts_session(&c.open_session(now).unwrap(), now));
        // Other credentials, a forged expiry, junk.
        let other = Credentials::with_cost("admin", "other", 4).unwrap();
        assert!(!other.accepts_session(&id, now));
        let (_, rest) = id.split_once('.').unwrap();
        assert!(!a.accepts_session(&format!("99999999999.{rest}"), now));
        for junk in ["", ".", "..", "x.y.z", "1.2.zz", "1.2.3", &"f".repeat(5000)] {
            assert!(!a.accepts_session(junk, now), "{junk:?}");
        }
    }
}
