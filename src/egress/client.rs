//! The guard as a reqwest client: what the operator's token requests (and a worker behind an
//! egress proxy) go through. Built only here, so nothing sends around the guard.

use super::policy::{EgressPolicy, Refused};
use super::{Egress, refusal};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

#[derive(Clone)]
pub struct GuardedClient {
    http: reqwest::Client,
    policy: Arc<EgressPolicy>,
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Refused(Refused),
    #[error("{}", crate::root_cause(.0))]
    Http(#[source] reqwest::Error),
}

impl SendError {
    /// The guard's refusal, whether of the URL's own address or of what its name resolved to.
    pub fn refused(&self) -> Option<&Refused> {
        match self {
            SendError::Refused(r) => Some(r),
            SendError::Http(e) => refusal(e),
        }
    }

    pub fn is_connect(&self) -> bool {
        match self {
            SendError::Refused(_) => true,
            SendError::Http(e) => e.is_connect(),
        }
    }
}

impl GuardedClient {
    /// `configure` sets what differs between callers (timeouts, TLS, pool); the resolver, the
    /// proxy and the redirect policy are the guard's.
    pub fn new(
        egress: &Egress,
        configure: impl FnOnce(reqwest::ClientBuilder) -> reqwest::ClientBuilder,
    ) -> Result<GuardedClient, reqwest::Error> {
        let builder = reqwest::Client::builder()
            .dns_resolver(Arc::new(egress.resolver()))
            // A redirect could send a request, and its credentials, where the guard never looked.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("hookline/", env!("CARGO_PKG_VERSION")));
        let builder = match egress.proxy() {
            Some(url) => builder
                .proxy(reqwest::Proxy::all(url.clone())?.no_proxy(reqwest::NoProxy::from_env())),
            None => builder.no_proxy(),
        };
        Ok(GuardedClient {
            http: configure(builder).build()?,
            policy: egress.policy.clone(),
        })
    }

    pub fn request(&self, method: http::Method, url: reqwest::Url) -> reqwest::RequestBuilder {
        self.http.request(method, url)
    }

    pub async fn execute(&self, request: reqwest::Request) -> Result<reqwest::Response, SendError> {
        let host = request.url().host_str().unwrap_or_default();
        self.policy.vet_host(host).map_err(SendError::Refused)?;
        self.http.execute(request).await.map_err(SendError::Http)
    }

    /// An `oauth2` request; the answer's HTTP status is kept in `status`, since the crate's
    /// errors do not say it.
    pub async fn oauth(
        &self,
        request: oauth2::HttpRequest,
        status: &AtomicU16,
    ) -> Result<oauth2::HttpResponse, SendError> {
        let request = reqwest::Request::try_from(request).map_err(SendError::Http)?;
        let response = self.execute(request).await?;
        status.store(response.status().as_u16(), Ordering::Relaxed);
        let mut answer = http::Response::builder().status(response.status());
        if let Some(headers) = answer.headers_mut() {
            *headers = response.headers().clone();
        }
        let body = response.bytes().await.map_err(SendError::Http)?;
        Ok(answer
            .body(body.to_vec())
            .expect("status and headers came from a response"))
    }
}
