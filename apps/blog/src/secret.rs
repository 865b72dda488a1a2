//! The JWT signing secret: from the configuration, or generated once and kept in the data
//! directory so that tokens survive a restart. Never hard-coded.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use anyhow::{Context, bail};

/// The file, in the data directory, that keeps a generated secret.
pub(crate) const SECRET_FILE: &str = "jwt-secret";

/// Below this many bytes a configured secret is accepted with a warning.
const MIN_SECRET_LEN: usize = 32;

/// The secret: `configured` if given, else the one kept in `data_dir`, created on first run.
pub(crate) fn jwt_secret(configured: Option<&str>, data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = configured {
        if secret.is_empty() {
            bail!("JWT_SECRET is empty");
        }
        if secret.len() < MIN_SECRET_LEN {
            tracing::warn!("JWT_SECRET is shorter than {MIN_SECRET_LEN} bytes; use a longer one");
        }
        return Ok(secret.as_bytes().to_vec());
    }
    load_or_create(data_dir)
}

fn load_or_create(data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    let path = data_dir.join(SECRET_FILE);
    fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    let generated = hex(&rand::random::<[u8; 32]>());
    match create_private(&path) {
        Ok(mut file) => {
            file.write_all(generated.as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
            tracing::info!(path = %path.display(), "generated a new JWT secret");
            Ok(generated.into_bytes())
        }
        // Kept from an earlier run (or written just now by another instance).
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let text =
                fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            let secret = text.trim();
            if secret.is_empty() {
                bail!("{} is empty: delete it to generate a new secret", path.display());
            }
            Ok(secret.as_bytes().to_vec())
        }
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

/// Creates `path`, failing if it exists, readable by its owner only.
fn create_private(path: &Path) -> io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_secret_wins() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        assert_eq!(jwt_secret(Some("configured"), dir.path())?, b"configured");
        assert!(!dir.path().join(SECRET_FILE).exists());
        assert!(jwt_secret(Some(""), dir.path()).is_err());
        Ok(())
    }

    #[test]
    fn generated_once_then_kept_private() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        let first = jwt_secret(None, &data)?;
        assert_eq!(first.len(), 64);
        assert_eq!(jwt_secret(None, &data)?, first);
        let other = tempfile::tempdir()?;
        assert_ne!(jwt_secret(None, other.path())?, first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(data.join(SECRET_FILE))?.permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        Ok(())
    }
}
