//! Password hashing with Argon2id, off the async runtime: a hash takes tens of milliseconds
//! of CPU, which would stall every other request on the worker.

use std::sync::OnceLock;

use anyhow::Context;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Argon2, password_hash};

/// Hashes `password` into a PHC string (`$argon2id$v=19$…`) with a random salt.
pub(crate) async fn hash(password: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || hash_now(&password))
        .await
        .context("password hashing task failed")?
}

/// Whether `password` matches the PHC string `hash`. A malformed hash is an error.
pub(crate) async fn verify(password: String, hash: String) -> anyhow::Result<bool> {
    tokio::task::spawn_blocking(move || verify_now(&password, &hash))
        .await
        .context("password verification task failed")?
}

/// Spends the time of a verification and answers `false`, so that a login for an unknown
/// e-mail address takes as long as one with a wrong password.
pub(crate) async fn verify_nothing(password: String) -> anyhow::Result<bool> {
    tokio::task::spawn_blocking(move || {
        static DUMMY: OnceLock<Option<String>> = OnceLock::new();
        if let Some(dummy) = DUMMY.get_or_init(|| hash_now("not anybody's password").ok()) {
            let _ = verify_now(&password, dummy);
        }
        Ok(false)
    })
    .await
    .context("password verification task failed")?
}

fn hash_now(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|e| anyhow::anyhow!("encoding a salt: {e}"))?;
    let hash = Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))?;
    Ok(hash.to_string())
}

fn verify_now(password: &str, hash: &str) -> anyhow::Result<bool> {
    let parsed = PasswordHash::new(hash).map_err(|e| anyhow::anyhow!("stored hash: {e}"))?;
    match Argon2::default().verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(password_hash::Error::Password) => Ok(false),
        Err(e) => Err(anyhow::anyhow!("verifying a password: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_then_verify() -> anyhow::Result<()> {
        let hashed = hash("correct horse".into()).await?;
        assert!(hashed.starts_with("$argon2id$"), "{hashed}");
        assert!(verify("correct horse".into(), hashed.clone()).await?);
        assert!(!verify("wrong horse".into(), hashed.clone()).await?);
        assert_ne!(hash("correct horse".into()).await?, hashed, "salts differ");
        assert!(verify("x".into(), "not a hash".into()).await.is_err());
        assert!(!verify_nothing("correct horse".into()).await?);
        Ok(())
    }
}
