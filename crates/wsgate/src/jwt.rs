//! JWT: signing and verifying tokens (HS256, algorithm pinned, `exp` required) and the
//! `JwtAuth` connection middleware that attaches the user.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::handshake::{ConnectMiddleware, Handshake, Refusal};

/// The claims wsgate signs: the subject (user id), issue and expiry times.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user's id.
    pub sub: String,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Expires at, seconds since the epoch.
    pub exp: u64,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No token was given.
    #[error("Missing authentication token.")]
    Missing,
    /// The token's `exp` is past.
    #[error("Token expired.")]
    Expired,
    /// Bad signature, wrong algorithm, missing claims or not a JWT at all.
    #[error("Invalid token.")]
    Invalid,
    /// The token could not be signed.
    #[error("could not sign the token")]
    Sign,
}

/// The keys and rules for the app's tokens, shared by the REST API and the gateways.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtKeys").field("algorithm", &Algorithm::HS256).finish_non_exhaustive()
    }
}

impl JwtKeys {
    /// HS256 keys from a shared secret. Only HS256 is accepted, and `exp` is required.
    pub fn hs256(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 0;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// Signs a token for `subject`, valid for `ttl`.
    pub fn sign(&self, subject: impl Into<String>, ttl: Duration) -> Result<String, TokenError> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let claims = Claims { sub: subject.into(), iat: now, exp: now + ttl.as_secs() };
        self.sign_claims(&claims)
    }

    /// Signs any claims (they should carry `exp` and `sub`).
    pub fn sign_claims<C: Serialize>(&self, claims: &C) -> Result<String, TokenError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|_| TokenError::Sign)
    }

    /// Verifies a token: signature, algorithm, and expiry.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })
    }
}

/// The token of a handshake, looked for in order: Socket.IO `auth.token`,
/// `Authorization: Bearer`, query `auth_token`, query `token`.
pub fn handshake_token(hs: &Handshake) -> Option<Cow<'_, str>> {
    if let Some(token) = hs.auth.as_ref().and_then(|a| a.get("token")).and_then(|t| t.as_str()) {
        return Some(Cow::Borrowed(token));
    }
    if let Some(token) = hs.header("authorization").and_then(bearer) {
        return Some(Cow::Borrowed(token));
    }
    hs.query_param("auth_token").or_else(|| hs.query_param("token")).filter(|t| !t.is_empty())
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Connection middleware: verifies the handshake's token, finds the user, and attaches it
/// (and the [`Claims`]) to the connection; the token's subject becomes the handshake's
/// [`identity`](Handshake::identity), which a recovered session must match. No token, a bad
/// token or an unknown user is a 401.
///
/// `find_user` gets the verified claims and returns the user, `None` when it no longer exists.
pub struct JwtAuth<F> {
    keys: JwtKeys,
    find_user: F,
}

impl<F> JwtAuth<F> {
    /// Middleware with these keys and this user lookup.
    pub fn new(keys: JwtKeys, find_user: F) -> Self {
        Self { keys, find_user }
    }
}

impl<F> fmt::Debug for JwtAuth<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuth").field("keys", &self.keys).finish_non_exhaustive()
    }
}

impl<F, Fut, U, E> ConnectMiddleware for JwtAuth<F>
where
    F: Fn(Claims) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Option<U>, E>> + Send,
    U: Clone + Send + Sync + 'static,
    E: fmt::Display + Send,
{
    async fn handle(&self, hs: &mut Handshake) -> Result<(), Refusal> {
        let claims = {
            let token = handshake_token(hs).ok_or(TokenError::Missing).map_err(refuse)?;
            self.keys.verify(&token).map_err(refuse)?
        };
        match (self.find_user)(claims.clone()).await {
            Ok(Some(user)) => {
                hs.identity = Some(claims.sub.clone());
                // One allocation for as long as the connection lives.
                hs.extensions.insert_pair(user, claims);
                Ok(())
            }
            Ok(None) => Err(Refusal::unauthorized("Unknown user.")),
            Err(e) => {
                tracing::error!(error = %e, "user lookup failed during handshake");
                Err(Refusal::new(http::StatusCode::SERVICE_UNAVAILABLE, "Internal server error"))
            }
        }
    }
}

fn refuse(e: TokenError) -> Refusal {
    Refusal::unauthorized(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> JwtKeys {
        JwtKeys::hs256(b"test-secret-test-secret-test-secret")
    }

    #[test]
    fn sign_and_verify() {
        let token = keys().sign("42", Duration::from_secs(60)).unwrap();
        assert_eq!(keys().verify(&token).unwrap().sub, "42");
    }

    #[test]
    fn wrong_key_expired_and_garbage_are_refused() {
        let token = keys().sign("42", Duration::from_secs(60)).unwrap();
        assert_eq!(JwtKeys::hs256(b"other").verify(&token), Err(TokenError::Invalid));
        let past = Claims { sub: "1".into(), iat: 1, exp: 2 };
        let old = keys().sign_claims(&past).unwrap();
        assert_eq!(keys().verify(&old), Err(TokenError::Expired));
        assert_eq!(keys().verify("not.a.jwt"), Err(TokenError::Invalid));
    }

    #[test]
    fn alg_none_and_missing_exp_are_refused() {
        // {"alg":"none","typ":"JWT"}.{"sub":"1","exp":9999999999}.
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiIxIiwiZXhwIjo5OTk5OTk5OTk5fQ.";
        assert_eq!(keys().verify(none), Err(TokenError::Invalid));
        #[derive(Serialize)]
        struct NoExp {
            sub: String,
        }
        let t = keys().sign_claims(&NoExp { sub: "1".into() }).unwrap();
        assert_eq!(keys().verify(&t), Err(TokenError::Invalid));
    }

    #[test]
    fn token_sources_in_order() {
        let mut hs = Handshake::new("/", "test");
        assert_eq!(handshake_token(&hs), None);
        hs.query = Some("token=q2".into());
        assert_eq!(handshake_token(&hs).as_deref(), Some("q2"));
        hs.query = Some("token=q2&auth_token=q1".into());
        assert_eq!(handshake_token(&hs).as_deref(), Some("q1"));
        hs.headers.insert("authorization", "Bearer h".parse().unwrap());
        assert_eq!(handshake_token(&hs).as_deref(), Some("h"));
        hs.auth = Some(serde_json::json!({"token": "a"}));
        assert_eq!(handshake_token(&hs).as_deref(), Some("a"));
    }

    #[tokio::test]
    async fn middleware_attaches_user_or_refuses() {
        let auth = JwtAuth::new(keys(), |c: Claims| async move {
            Ok::<_, std::io::Error>((c.sub == "7").then(|| String::from("user seven")))
        });
        let mut hs = Handshake::new("/", "test");
        let err = ConnectMiddleware::handle(&auth, &mut hs).await.unwrap_err();
        assert_eq!(err, Refusal::unauthorized("Missing authentication token."));

        hs.query = Some(format!("token={}", keys().sign("7", Duration::from_secs(60)).unwrap()));
        ConnectMiddleware::handle(&auth, &mut hs).await.unwrap();
        assert_eq!(hs.extensions.get::<String>().map(String::as_str), Some("user seven"));

        let mut hs = Handshake::new("/", "test");
        hs.query = Some(format!("token={}", keys().sign("8", Duration::from_secs(60)).unwrap()));
        let err = ConnectMiddleware::handle(&auth, &mut hs).await.unwrap_err();
        assert_eq!(err.message, "Unknown user.");
    }
}
