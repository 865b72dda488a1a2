//! `AllowedOrigins`: connection middleware against cross-site WebSocket hijacking.

use std::sync::Arc;

use http::StatusCode;

use crate::handshake::{ConnectMiddleware, Handshake, Refusal};

/// Refuses (403 `Origin not allowed.`) a handshake whose `Origin` header names a site that may
/// not connect.
///
/// Browsers send `Origin` with every WebSocket upgrade and cross-origin request, and a page of
/// any site can open a WebSocket to any server, carrying the user's cookies: this middleware is
/// what stops another site's page from talking to the gateways on the user's behalf. Clients
/// that are not browsers send no `Origin` (or whatever they like) and are let through: they
/// are authenticated by their token, not by where they run.
///
/// A page's own origin (the `Origin` whose host and port are the request's `Host`) is always
/// allowed. [`AllowedOrigins::same_origin`] allows nothing more, [`AllowedOrigins::list`]
/// adds exact origins such as `https://app.example.com`, and [`AllowedOrigins::any`] allows
/// every origin.
#[derive(Clone, Debug)]
pub struct AllowedOrigins {
    allowed: Option<Arc<[String]>>,
}

impl AllowedOrigins {
    /// Only the server's own origin (and clients that send none).
    pub fn same_origin() -> Self {
        Self { allowed: Some(Arc::from([])) }
    }

    /// Every origin.
    pub fn any() -> Self {
        Self { allowed: None }
    }

    /// The server's own origin and these, compared exactly (scheme, host and port, no path),
    /// ignoring ASCII case and a trailing `/`. A `*` among them allows every origin.
    pub fn list<I, S>(origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let origins: Vec<String> =
            origins.into_iter().map(|o| normalize(o.as_ref())).filter(|o| !o.is_empty()).collect();
        if origins.iter().any(|o| o == "*") {
            return Self::any();
        }
        Self { allowed: Some(origins.into()) }
    }

    /// Parses a comma-separated list as `ALLOWED_ORIGINS` gives it; empty means same origin.
    pub fn parse(list: &str) -> Self {
        Self::list(list.split(',').map(str::trim))
    }

    /// The origins allowed besides the server's own; `None` when every origin is.
    pub fn origins(&self) -> Option<&[String]> {
        self.allowed.as_deref()
    }

    /// Whether a handshake with these `Origin` and `Host` headers may proceed.
    pub fn allows(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let (Some(allowed), Some(origin)) = (&self.allowed, origin) else { return true };
        let origin = normalize(origin);
        if let (Some(host), Some((_, authority))) = (host, origin.split_once("://"))
            && authority.eq_ignore_ascii_case(host)
        {
            return true;
        }
        allowed.contains(&origin)
    }
}

fn normalize(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

impl ConnectMiddleware for AllowedOrigins {
    async fn handle(&self, handshake: &mut Handshake) -> Result<(), Refusal> {
        let origin = handshake.header("origin");
        let host = handshake.header("host");
        if self.allows(origin, host) {
            Ok(())
        } else {
            Err(Refusal::new(StatusCode::FORBIDDEN, "Origin not allowed."))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_allows_the_page_itself_and_non_browsers() {
        let policy = AllowedOrigins::same_origin();
        assert!(policy.allows(None, Some("localhost:3000")));
        assert!(policy.allows(Some("http://localhost:3000"), Some("localhost:3000")));
        assert!(policy.allows(Some("HTTP://LocalHost:3000/"), Some("localhost:3000")));
        assert!(!policy.allows(Some("http://evil.example"), Some("localhost:3000")));
        assert!(!policy.allows(Some("http://localhost:3001"), Some("localhost:3000")));
        assert!(!policy.allows(Some("null"), Some("localhost:3000")));
        assert!(!policy.allows(Some("http://localhost:3000"), None));
    }

    #[test]
    fn lists_add_exact_origins_and_star_allows_all() {
        let policy = AllowedOrigins::parse("https://app.example.com, http://localhost:5173/");
        assert!(policy.allows(Some("https://app.example.com"), Some("api.example.com")));
        assert!(policy.allows(Some("http://localhost:5173"), Some("localhost:3000")));
        assert!(!policy.allows(Some("https://app.example.com.evil"), Some("api.example.com")));
        assert!(!policy.allows(Some("http://app.example.com"), Some("api.example.com")));
        assert!(AllowedOrigins::parse("").allows(Some("http://h:1"), Some("h:1")));
        assert!(!AllowedOrigins::parse("").allows(Some("http://x"), Some("h:1")));
        assert!(AllowedOrigins::parse("*").allows(Some("http://x"), Some("h:1")));
        assert_eq!(AllowedOrigins::parse("*").origins(), None);
    }
}
