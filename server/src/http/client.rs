//! Where a request comes from: the address of the connection, or, when that
//! is a proxy the operator trusts (`NATTER_TRUSTED_PROXIES`), the client's
//! address as the proxy passed it on in `X-Forwarded-For`. Logins are
//! counted per client (`auth::throttle`), and behind a proxy every
//! connection is the proxy's.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;

use crate::error::ApiError;
use crate::state::AppState;

/// The client's address (see the module).
pub struct ClientAddr(pub IpAddr);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let ConnectInfo(peer) = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .copied()
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("served without ConnectInfo")))?;
        let trusted = &state.settings.trusted_proxies;
        Ok(ClientAddr(client_address(
            &parts.headers,
            peer.ip(),
            trusted,
        )))
    }
}

/// `peer`, or when it is one of `trusted`, the last address in
/// `X-Forwarded-For` that is not: each proxy appends the address it was
/// reached from, so what is right of the first untrusted one was written
/// by trusted proxies, and what is left of it may be anything a client
/// sent. An entry that is not an address where one is needed leaves
/// `peer`: the header is then not what trusted proxies wrote.
pub fn client_address(headers: &HeaderMap, peer: IpAddr, trusted: &[IpAddr]) -> IpAddr {
    let is_trusted = |address: IpAddr| trusted.contains(&address.to_canonical());
    if !is_trusted(peer) {
        return peer;
    }
    let mut forwarded: Vec<&str> = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        // Not text: not what trusted proxies wrote, whatever is in it.
        let Ok(value) = value.to_str() else {
            return peer;
        };
        forwarded.extend(value.split(',').map(str::trim));
    }
    for entry in forwarded.into_iter().rev() {
        let Some(address) = parse_entry(entry) else {
            return peer;
        };
        if !is_trusted(address) {
            return address.to_canonical();
        }
    }
    peer
}

/// An `X-Forwarded-For` entry: an address, with or without a port
/// (`192.0.2.1:4711`, `[2001:db8::1]:4711`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|socket| socket.ip()))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                "x-forwarded-for",
                HeaderValue::from_str(value).expect("ascii"),
            );
        }
        headers
    }

    #[test]
    fn a_trusted_proxy_names_the_client_and_no_one_else_can() {
        let proxy = ip("10.0.0.2");
        let trusted = [proxy, ip("10.0.0.3")];
        let headers = forwarded(&["198.51.100.9, 192.0.2.7", "10.0.0.3"]);
        assert_eq!(client_address(&headers, proxy, &trusted), ip("192.0.2.7"));
        // What a client wrote itself, left of what the proxies appended,
        // counts for nothing; nor does the header from an untrusted peer.
        assert_eq!(
            client_address(&headers, ip("203.0.113.5"), &trusted),
            ip("203.0.113.5")
        );
        assert_eq!(client_address(&headers, proxy, &[]), proxy);
        // Ports, IPv6 and IPv4 mapped into it; no header; a header spoilt.
        let headers = forwarded(&["[2001:db8::1]:4711"]);
        assert_eq!(client_address(&headers, proxy, &trusted), ip("2001:db8::1"));
        let headers = forwarded(&["192.0.2.7:4711"]);
        assert_eq!(client_address(&headers, proxy, &trusted), ip("192.0.2.7"));
        let headers = forwarded(&["::ffff:192.0.2.7"]);
        assert_eq!(client_address(&headers, proxy, &trusted), ip("192.0.2.7"));
        assert_eq!(client_address(&HeaderMap::new(), proxy, &trusted), proxy);
        let headers = forwarded(&["192.0.2.7, unknown"]);
        assert_eq!(client_address(&headers, proxy, &trusted), proxy);
        let mut headers = forwarded(&["192.0.2.7"]);
        let unreadable = HeaderValue::from_bytes(b"198.51.100.9 \xff").expect("a value");
        headers.append("x-forwarded-for", unreadable);
        assert_eq!(client_address(&headers, proxy, &trusted), proxy);
        let headers = forwarded(&["10.0.0.3, 10.0.0.2"]);
        assert_eq!(
            client_address(&headers, proxy, &trusted),
            proxy,
            "only proxies"
        );
        let mapped_proxy = ip("::ffff:10.0.0.2");
        let headers = forwarded(&["192.0.2.7"]);
        assert_eq!(
            client_address(&headers, mapped_proxy, &trusted),
            ip("192.0.2.7")
        );
    }
}
