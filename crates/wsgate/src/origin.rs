//! `AllowedOrigins`: connection middleware against cross-site WebSocket hijacking.

use std::net::{Ipv4Addr, Ipv6Addr};
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
/// allowed. So is a page of the same loopback server under another of its names: when the
/// `Origin` (`http` or `https`) and the `Host` both name a loopback address (`localhost`,
/// `127.0.0.1` or any `127.x.y.z`, `[::1]`) with the same port, a page opened at
/// `http://127.0.0.1:3000` may connect to `ws://localhost:3000`, and the reverse; another port
/// is another server. [`AllowedOrigins::same_origin`] allows nothing more,
/// [`AllowedOrigins::list`] adds exact origins such as `https://app.example.com`, and
/// [`AllowedOrigins::any`] allows every origin.
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
        if let (Some(host), Some((scheme, authority))) = (host, origin.split_once("://")) {
            let host = host.trim().to_ascii_lowercase();
            if authority == host || same_loopback_server(scheme, authority, &host) {
                return true;
            }
        }
        allowed.contains(&origin)
    }
}

fn normalize(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// Whether an origin's `scheme` and `authority` and a request's `host` (all lowercase) name the
/// same loopback server: a web page's scheme, loopback names on both sides, the same port.
fn same_loopback_server(scheme: &str, authority: &str, host: &str) -> bool {
    if scheme != "http" && scheme != "https" {
        return false;
    }
    match (loopback_port(authority), loopback_port(host)) {
        (Some(origin_port), Some(host_port)) => origin_port == host_port,
        _ => false,
    }
}

/// The port of `host[:port]` (`None` when not written) if its host is a loopback name.
///
/// Ports are compared as written, as the same-host rule compares authorities: browsers leave
/// a scheme's default port out of both headers.
fn loopback_port(authority: &str) -> Option<Option<&str>> {
    let (loopback, rest) = match authority.strip_prefix('[') {
        Some(bracketed) => {
            let (ip, rest) = bracketed.split_once(']')?;
            (ip.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_loopback()), rest)
        }
        None => {
            let (host, rest) =
                authority.find(':').map_or((authority, ""), |at| authority.split_at(at));
            (host == "localhost" || host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback()), rest)
        }
    };
    if !loopback {
        return None;
    }
    match rest.strip_prefix(':') {
        None if rest.is_empty() => Some(None),
        Some(port) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            Some(Some(port))
        }
        _ => None,
    }
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

    #[test]
    fn loopback_names_of_one_port_are_one_server() {
        let policy = AllowedOrigins::same_origin();
        // Both spellings, each way, and the other loopback names.
        assert!(policy.allows(Some("http://127.0.0.1:3000"), Some("localhost:3000")));
        assert!(policy.allows(Some("http://localhost:3000"), Some("127.0.0.1:3000")));
        assert!(policy.allows(Some("https://LOCALHOST:3000/"), Some("127.0.0.1:3000")));
        assert!(policy.allows(Some("http://127.1.2.3:3000"), Some("localhost:3000")));
        assert!(policy.allows(Some("http://[::1]:3000"), Some("127.0.0.1:3000")));
        assert!(policy.allows(Some("http://localhost:3000"), Some("[::1]:3000")));
        assert!(policy.allows(Some("http://localhost"), Some("127.0.0.1")));
    }

    #[test]
    fn another_port_is_another_server() {
        let policy = AllowedOrigins::same_origin();
        assert!(!policy.allows(Some("http://127.0.0.1:3001"), Some("localhost:3000")));
        assert!(!policy.allows(Some("http://localhost:3000"), Some("127.0.0.1:3001")));
        assert!(!policy.allows(Some("http://localhost"), Some("127.0.0.1:3000")));
        assert!(!policy.allows(Some("http://localhost:3000"), Some("127.0.0.1")));
    }

    #[test]
    fn a_loopback_server_refuses_other_sites_pages() {
        let policy = AllowedOrigins::same_origin();
        assert!(!policy.allows(Some("http://evil.example:3000"), Some("localhost:3000")));
        assert!(!policy.allows(Some("http://localhost.evil.example:3000"), Some("127.0.0.1:3000")));
        assert!(!policy.allows(Some("http://10.0.0.1:3000"), Some("127.0.0.1:3000")));
        assert!(!policy.allows(Some("http://[::2]:3000"), Some("[::1]:3000")));
        // Not a web page's scheme, not an origin, not a port.
        assert!(!policy.allows(Some("file://localhost:3000"), Some("127.0.0.1:3000")));
        assert!(!policy.allows(Some("null"), Some("127.0.0.1:3000")));
        assert!(!policy.allows(Some("http://localhost:x"), Some("127.0.0.1:x")));
        assert!(!policy.allows(Some("http://localhost:3000/x"), Some("127.0.0.1:3000")));
    }

    #[test]
    fn a_server_that_is_not_loopback_refuses_loopback_pages() {
        let policy = AllowedOrigins::same_origin();
        assert!(!policy.allows(Some("http://localhost:3000"), Some("blog.example:3000")));
        assert!(!policy.allows(Some("http://127.0.0.1:3000"), Some("10.0.0.1:3000")));
        // Unless it lists them.
        let listed = AllowedOrigins::parse("http://localhost:5173");
        assert!(listed.allows(Some("http://localhost:5173"), Some("blog.example")));
        assert!(!listed.allows(Some("http://127.0.0.1:5173"), Some("blog.example")));
    }
}
