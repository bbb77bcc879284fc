//! A `tower` layer that puts the gateway check in front of any HTTP service
//! (axum, tonic, hyper): a request without a valid, unrevoked bearer token
//! is answered `401` (or `503` when the filter is stale under
//! `FailClosed`) and never reaches the service; an allowed one carries its
//! verified [`Claims`] in its extensions.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{header, HeaderValue, Request, Response, StatusCode};

use super::{Decision, Denial, Gateway};
use crate::tokens::Claims;

/// Wraps services with [`RevocationService`].
#[derive(Debug, Clone)]
pub struct RevocationLayer {
    gateway: Gateway,
}

impl RevocationLayer {
    /// A layer checking tokens with `gateway`.
    pub fn new(gateway: Gateway) -> Self {
        RevocationLayer { gateway }
    }
}

impl<S> tower::Layer<S> for RevocationLayer {
    type Service = RevocationService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RevocationService {
            inner,
            gateway: self.gateway.clone(),
        }
    }
}

/// A service that lets through only requests with an allowed bearer token.
#[derive(Debug, Clone)]
pub struct RevocationService<S> {
    inner: S,
    gateway: Gateway,
}

impl<S, RequestBody, ResponseBody> tower::Service<Request<RequestBody>> for RevocationService<S>
where
    S: tower::Service<Request<RequestBody>, Response = Response<ResponseBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    RequestBody: Send + 'static,
    ResponseBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<RequestBody>) -> Self::Future {
        // The clone is not ready; the instance polled ready is the one used.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let gateway = self.gateway.clone();
        Box::pin(async move {
            match gateway.decide(bearer_token(request.headers())).await {
                Decision::Allow(claims) => {
                    request.extensions_mut().insert::<Claims>(claims);
                    inner.call(request).await
                }
                Decision::Deny(denial) => Ok(refusal(&denial)),
            }
        })
    }
}

/// The token of a request's `Authorization` header (see [`token_of`]).
pub fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    token_of(headers.get(header::AUTHORIZATION)?.to_str().ok()?)
}

/// The token in a header value: `Bearer <token>` (scheme in any case) or
/// the bare token; `None` for another scheme or an empty token. The one
/// rule for every place a token is taken from a header.
pub fn token_of(value: &str) -> Option<&str> {
    let value = value.trim();
    if value.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        Some(_) => return None,
        None => value,
    };
    (!token.is_empty()).then_some(token)
}

/// `401` with an RFC 6750 challenge, or `503` for a stale filter.
pub fn refusal<B: Default>(denial: &Denial) -> Response<B> {
    let status = if denial.is_unavailable() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::UNAUTHORIZED
    };
    let mut response = Response::new(B::default());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, challenge(denial));
    response
}

/// `Bearer error="invalid_token", error_description="…"` (RFC 6750 §3).
pub fn challenge(denial: &Denial) -> HeaderValue {
    let description: String = denial
        .to_string()
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .map(|c| if c == '"' || c == '\\' { '\'' } else { c })
        .collect();
    let value = match denial {
        Denial::NoToken => "Bearer".to_owned(),
        _ => format!("Bearer error=\"invalid_token\", error_description=\"{description}\""),
    };
    // Only printable ASCII was kept above.
    HeaderValue::from_str(&value).expect("printable ASCII header")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_found_bare_or_after_bearer() {
        assert_eq!(token_of("Bearer a.b.c"), Some("a.b.c"));
        assert_eq!(token_of("bearer   a.b.c "), Some("a.b.c"));
        assert_eq!(token_of("a.b.c"), Some("a.b.c"));
        assert_eq!(token_of("Basic dXNlcg=="), None);
        assert_eq!(token_of("Bearer "), None);
        assert_eq!(token_of("Bearer"), None);
        assert_eq!(token_of(""), None);
    }

    #[test]
    fn bearer_tokens_are_found_case_insensitively() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(bearer_token(&headers), None);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  abc.def.ghi "),
        );
        assert_eq!(bearer_token(&headers), Some("abc.def.ghi"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer_token(&headers), None);
    }

    #[test]
    fn refusals_carry_a_challenge() {
        let response: Response<String> = refusal(&Denial::Revoked);
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let challenge = response.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap();
        assert_eq!(
            challenge,
            "Bearer error=\"invalid_token\", error_description=\"the token has been revoked\""
        );
        let stale: Response<String> = refusal(&Denial::Stale);
        assert_eq!(stale.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
