//! permessage-deflate (RFC 7692): the setting, and its negotiation at the upgrade.
//!
//! Off unless an adapter is given a [`Compression`]. When it is on and the client offers the
//! extension (browsers and `ws` do), messages of at least [`Compression::threshold`] bytes are
//! compressed; smaller ones go as they are, which RFC 7692 allows message by message. What a
//! client compresses is inflated whatever its size, up to the message size limit (counted
//! after inflation).
//!
//! Context takeover, the choice that decides the memory a connection costs:
//! - **the client's** is always declined (`client_no_context_takeover`): each message it
//!   sends is inflated on its own, by the thread's decompressor, so that a connection holds
//!   no inflate window (32 KiB and more);
//! - **the server's** is declined too by default (`server_no_context_takeover`): each message
//!   is compressed on its own by the thread's compressor, and a connection holds nothing.
//!   [`Compression::context_takeover`] keeps a compressor per connection instead, so that a
//!   message can refer to the ones before it: smaller frames for a stream of similar
//!   messages, at about 256 KiB (zlib's window and hash tables) held by every connection.
//!
//! A `server_max_window_bits` the client asks for is honoured (9 to 15; an offer asking for 8,
//! which zlib cannot produce for raw deflate, is declined); `client_max_window_bits` needs no
//! answer, as the decompressor reads any window.

use flate2::Compress;
use http::{HeaderMap, HeaderValue, header};

/// The permessage-deflate setting of an adapter.
#[derive(Clone, Debug)]
pub struct Compression {
    threshold: usize,
    level: u32,
    context_takeover: bool,
}

impl Default for Compression {
    fn default() -> Self {
        Self { threshold: 1024, level: 1, context_takeover: false }
    }
}

impl Compression {
    /// Compression of messages of 1 KiB and more (as `ws` does), at zlib level 1, each message
    /// on its own.
    pub fn new() -> Self {
        Self::default()
    }

    /// Messages shorter than this go uncompressed (default 1024 bytes).
    #[must_use]
    pub fn threshold(mut self, bytes: usize) -> Self {
        self.threshold = bytes;
        self
    }

    /// The zlib level, 0 to 9 (default 1: most of the gain on JSON for a fraction of the CPU
    /// of level 6).
    #[must_use]
    pub fn level(mut self, level: u32) -> Self {
        self.level = level.min(9);
        self
    }

    /// Keeps a compressor per connection, so that messages refer to earlier ones (default
    /// off: see the [module](self) for what it costs).
    #[must_use]
    pub fn context_takeover(mut self, on: bool) -> Self {
        self.context_takeover = on;
        self
    }

    /// Accepts the first permessage-deflate offer of a request's `Sec-WebSocket-Extensions`
    /// that this setting can serve: the response's header value and what was agreed.
    pub fn negotiate(&self, headers: &HeaderMap) -> Option<(HeaderValue, Negotiated)> {
        let offers = headers
            .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','));
        offers.filter_map(Offer::parse).find_map(|offer| self.accept(&offer))
    }

    fn accept(&self, offer: &Offer) -> Option<(HeaderValue, Negotiated)> {
        let window_bits = match offer.server_max_window_bits {
            None => 15,
            Some(bits @ 9..=15) => bits,
            Some(_) => return None,
        };
        let takeover = self.context_takeover && !offer.server_no_context_takeover;
        let mut response = String::from("permessage-deflate; client_no_context_takeover");
        if !takeover {
            response.push_str("; server_no_context_takeover");
        }
        if let Some(bits) = offer.server_max_window_bits {
            response.push_str(&format!("; server_max_window_bits={bits}"));
        }
        let value = HeaderValue::from_str(&response).ok()?;
        let mut negotiated = Negotiated {
            threshold: self.threshold,
            level: self.level,
            server_window_bits: window_bits,
            own: None,
        };
        if takeover {
            negotiated.own = Some(Box::new(negotiated.compressor()));
        }
        Some((value, negotiated))
    }
}

/// What a connection agreed: how its messages are compressed.
#[derive(Debug)]
pub struct Negotiated {
    pub(crate) threshold: usize,
    pub(crate) level: u32,
    pub(crate) server_window_bits: u8,
    /// The connection's own compressor, with context takeover.
    pub(crate) own: Option<Box<Compress>>,
}

impl Negotiated {
    pub(crate) fn compressor(&self) -> Compress {
        Compress::new_with_window_bits(
            flate2::Compression::new(self.level),
            false,
            self.server_window_bits,
        )
    }
}

/// One permessage-deflate offer's parameters; `None` from [`Offer::parse`] when it is another
/// extension or has a parameter it may not have (unknown, repeated, or out of range).
#[derive(Debug, Default, PartialEq)]
struct Offer {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    client_max_window_bits: Option<Option<u8>>,
}

impl Offer {
    fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split(';').map(str::trim);
        if !parts.next()?.eq_ignore_ascii_case("permessage-deflate") {
            return None;
        }
        let mut offer = Self::default();
        for param in parts {
            let (name, value) = match param.split_once('=') {
                Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
                None => (param, None),
            };
            let bits = |v: &str| v.parse::<u8>().ok().filter(|b| (8..=15).contains(b));
            match (name.to_ascii_lowercase().as_str(), value) {
                ("server_no_context_takeover", None) if !offer.server_no_context_takeover => {
                    offer.server_no_context_takeover = true;
                }
                ("client_no_context_takeover", None) if !offer.client_no_context_takeover => {
                    offer.client_no_context_takeover = true;
                }
                ("server_max_window_bits", Some(v)) if offer.server_max_window_bits.is_none() => {
                    offer.server_max_window_bits = Some(bits(v)?);
                }
                ("client_max_window_bits", v) if offer.client_max_window_bits.is_none() => {
                    offer.client_max_window_bits = Some(match v {
                        Some(v) => Some(bits(v)?),
                        None => None,
                    });
                }
                _ => return None,
            }
        }
        Some(offer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offered(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::SEC_WEBSOCKET_EXTENSIONS, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn answer(setting: &Compression, values: &[&str]) -> Option<String> {
        setting.negotiate(&offered(values)).map(|(v, _)| v.to_str().unwrap().to_owned())
    }

    #[test]
    fn browsers_offer_is_accepted_without_context_takeover() {
        // What Chromium and `ws` send.
        let answer = answer(&Compression::new(), &["permessage-deflate; client_max_window_bits"]);
        assert_eq!(
            answer.as_deref(),
            Some("permessage-deflate; client_no_context_takeover; server_no_context_takeover")
        );
    }

    #[test]
    fn no_offer_or_another_extension_gets_nothing() {
        assert_eq!(answer(&Compression::new(), &[]), None);
        assert_eq!(answer(&Compression::new(), &["x-webkit-deflate-frame"]), None);
    }

    #[test]
    fn offers_are_tried_in_order_and_bad_ones_skipped() {
        let answer = answer(
            &Compression::new(),
            &[
                "permessage-deflate; server_max_window_bits=8",
                "permessage-deflate; unknown_param, permessage-deflate; server_max_window_bits=10",
            ],
        );
        assert_eq!(
            answer.as_deref(),
            Some(
                "permessage-deflate; client_no_context_takeover; server_no_context_takeover; \
                 server_max_window_bits=10"
            )
        );
    }

    #[test]
    fn parameters_are_checked() {
        assert_eq!(Offer::parse("permessage-deflate; server_max_window_bits=16"), None);
        assert_eq!(Offer::parse("permessage-deflate; server_max_window_bits"), None);
        assert_eq!(Offer::parse("permessage-deflate; client_no_context_takeover=1"), None);
        assert_eq!(
            Offer::parse(
                "permessage-deflate; client_no_context_takeover; client_no_context_takeover"
            ),
            None
        );
        assert_eq!(
            Offer::parse("permessage-deflate; client_max_window_bits=\"12\""),
            Some(Offer { client_max_window_bits: Some(Some(12)), ..Offer::default() })
        );
    }

    #[test]
    fn context_takeover_is_kept_unless_the_client_declines_it() {
        let setting = Compression::new().context_takeover(true);
        let (value, negotiated) = setting.negotiate(&offered(&["permessage-deflate"])).unwrap();
        assert_eq!(value, "permessage-deflate; client_no_context_takeover");
        assert!(negotiated.own.is_some());
        let (value, negotiated) = setting
            .negotiate(&offered(&["permessage-deflate; server_no_context_takeover"]))
            .unwrap();
        assert_eq!(
            value,
            "permessage-deflate; client_no_context_takeover; server_no_context_takeover"
        );
        assert!(negotiated.own.is_none());
    }
}
