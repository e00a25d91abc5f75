//! L1 RPC URLs in messages: hosted endpoints carry their API key in the URL (a path segment, the query or the
//! user info), so the node never prints one whole. [`redact_url`] keeps the scheme, host and port; [`scrub`]
//! removes the secret parts from any message, including transport errors that quote the URL they failed on.

use std::sync::Arc;
use std::task::{Context, Poll};

use alloy::rpc::client::{ClientBuilder, RpcClient};
use alloy::rpc::json_rpc::{RequestPacket, ResponsePacket};
use alloy::transports::http::reqwest::Url;
use alloy::transports::{RpcError, TransportError, TransportErrorKind, TransportFut};

/// `scheme://host[:port]`, with `/…` when the URL had anything more (a path, a query, user info).
pub fn redact_url(url: &str) -> String {
    let Ok(u) = Url::parse(url) else {
        return "<an unparsable URL>".into();
    };
    let host = u.host_str().unwrap_or("");
    let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
    let more = (u.path() != "/" && !u.path().is_empty())
        || u.query().is_some()
        || !u.username().is_empty()
        || u.password().is_some();
    format!(
        "{}://{host}{port}{}",
        u.scheme(),
        if more { "/…" } else { "" }
    )
}

/// `text` with every secret-bearing part of `url` replaced: the URL as written and as normalised, its path,
/// query, user name and password.
pub fn scrub(text: &str, url: &str) -> String {
    let mut out = text.to_string();
    let redacted = redact_url(url);
    let mut secrets: Vec<String> = vec![url.to_string(), url.trim_end_matches('/').to_string()];
    if let Ok(u) = Url::parse(url) {
        secrets.push(u.as_str().to_string());
        secrets.push(u.as_str().trim_end_matches('/').to_string());
        if u.path().len() > 1 {
            secrets.push(u.path().to_string());
        }
        secrets.extend(u.query().map(str::to_string));
        secrets.extend(u.password().map(str::to_string));
        if !u.username().is_empty() {
            secrets.push(u.username().to_string());
        }
    } else {
        // Unparsable: nothing of it can be told apart safely, so it goes whole (done above).
    }
    // Longest first, so that a whole URL is replaced before its parts.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for s in secrets.iter().filter(|s| s.len() >= 2) {
        let with = if s.contains("://") {
            redacted.as_str()
        } else {
            "…"
        };
        out = out.replace(s.as_str(), with);
    }
    out
}

/// An HTTP JSON-RPC client for `url` whose transport errors never carry the URL's secrets (every component built on
/// it logs and returns them scrubbed).
pub fn scrubbed_http_client(url: Url) -> RpcClient {
    ClientBuilder::default()
        .layer(ScrubLayer {
            url: Arc::from(url.as_str()),
        })
        .http(url)
}

/// The transport layer of [`scrubbed_http_client`].
#[derive(Clone)]
pub struct ScrubLayer {
    url: Arc<str>,
}

impl<S> tower::Layer<S> for ScrubLayer {
    type Service = Scrubbed<S>;

    fn layer(&self, inner: S) -> Scrubbed<S> {
        Scrubbed {
            inner,
            url: self.url.clone(),
        }
    }
}

/// A transport whose errors are scrubbed of its URL's secrets.
#[derive(Clone)]
pub struct Scrubbed<S> {
    inner: S,
    url: Arc<str>,
}

fn scrub_error(e: TransportError, url: &str) -> TransportError {
    match e {
        // Transport failures (connection, HTTP status) quote the URL; JSON-RPC errors come from the node's answer.
        RpcError::Transport(kind) => TransportErrorKind::custom_str(&scrub(&kind.to_string(), url)),
        other => other,
    }
}

impl<S> tower::Service<RequestPacket> for Scrubbed<S>
where
    S: tower::Service<
            RequestPacket,
            Response = ResponsePacket,
            Error = TransportError,
            Future = TransportFut<'static>,
        > + Send
        + Sync
        + Clone
        + 'static,
{
    type Response = ResponsePacket;
    type Error = TransportError;
    type Future = TransportFut<'static>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        let url = self.url.clone();
        self.inner.poll_ready(cx).map_err(|e| scrub_error(e, &url))
    }

    fn call(&mut self, req: RequestPacket) -> Self::Future {
        let fut = self.inner.call(req);
        let url = self.url.clone();
        Box::pin(async move { fut.await.map_err(|e| scrub_error(e, &url)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::providers::{Provider, ProviderBuilder};

    const KEYED: &str = "http://user:pa55word@127.0.0.1:1/v2/SECRETKEY123?apikey=QUERYSECRET";

    #[test]
    fn only_scheme_host_and_port_remain() {
        assert_eq!(redact_url(KEYED), "http://127.0.0.1:1/…");
        assert_eq!(
            redact_url("https://rpc.example.org"),
            "https://rpc.example.org"
        );
        assert_eq!(
            redact_url("https://rpc.example.org/"),
            "https://rpc.example.org"
        );
        assert_eq!(redact_url("not a url SECRET"), "<an unparsable URL>");
    }

    /// A real transport error quotes the URL it failed on, key included; scrubbed, nothing of the key is left.
    #[tokio::test]
    async fn transport_errors_are_scrubbed_of_the_key() {
        let provider = ProviderBuilder::new().connect_http(KEYED.parse().unwrap());
        let err = provider.get_chain_id().await.unwrap_err().to_string();
        assert!(
            err.contains("SECRETKEY123"),
            "the raw error quotes the URL: {err}"
        );
        let clean = scrub(&err, KEYED);
        for secret in ["SECRETKEY123", "QUERYSECRET", "pa55word"] {
            assert!(!clean.contains(secret), "{clean}");
        }
        assert!(clean.contains("127.0.0.1:1"), "{clean}");

        // The node's client scrubs at the transport: nothing of the key reaches any caller.
        let scrubbed = ProviderBuilder::new()
            .disable_recommended_fillers()
            .connect_client(scrubbed_http_client(KEYED.parse().unwrap()));
        let err = scrubbed.get_chain_id().await.unwrap_err().to_string();
        for secret in ["SECRETKEY123", "QUERYSECRET", "pa55word"] {
            assert!(!err.contains(secret), "{err}");
        }
    }
}
