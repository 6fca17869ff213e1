//! The egress guard (API §11): one place decides where an outbound request may go. Every
//! address a host name resolves to is vetted by the process's [`EgressPolicy`] and the
//! connection goes to those vetted addresses — resolved once per connection, so DNS rebinding
//! cannot swap them — and a host written as an address is vetted as it is. Redirects are never
//! followed. An egress proxy, when one is set, resolves the target itself; its own address is
//! vetted like any other.

pub mod client;
pub mod connector;
pub mod policy;
pub mod ranges;

use futures::future::BoxFuture;
use policy::{EgressPolicy, Refused};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Turns a host name into addresses: the system resolver, or a stub in tests.
pub type Lookup =
    Arc<dyn Fn(String) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>> + Send + Sync>;

fn system_lookup() -> Lookup {
    Arc::new(|host: String| {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .map(|a| a.ip())
                .collect())
        })
    })
}

/// A process's outbound rules: the policy, the egress proxy, and how names are resolved.
#[derive(Clone)]
pub struct Egress {
    pub policy: Arc<EgressPolicy>,
    proxy: Option<reqwest::Url>,
    lookup: Lookup,
}

impl std::fmt::Debug for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Egress")
            .field("policy", &self.policy)
            .field("proxy", &self.proxy.as_ref().map(|p| p.host_str()))
            .finish_non_exhaustive()
    }
}

/// The egress proxy's address is itself refused, or it is not a URL.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("the egress proxy {url} is not a usable proxy URL")]
    Invalid { url: String },
    #[error("the egress proxy {url}: {refused}")]
    Refused { url: String, refused: Refused },
}

impl Egress {
    /// `proxy`: the admin's egress proxy; otherwise `HTTPS_PROXY` (or `ALL_PROXY`, or
    /// `HTTP_PROXY`) when set.
    /// `NO_PROXY` names the hosts reached directly, through the guard.
    pub fn new(policy: EgressPolicy, proxy: Option<&str>) -> Result<Egress, ProxyError> {
        let from_env = || {
            [
                "HTTPS_PROXY",
                "https_proxy",
                "ALL_PROXY",
                "all_proxy",
                "HTTP_PROXY",
                "http_proxy",
            ]
            .iter()
            .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
        };
        let proxy = match proxy.map(str::to_string).or_else(from_env) {
            None => None,
            Some(text) => {
                let url = reqwest::Url::parse(&text)
                    .ok()
                    .filter(|u| u.host_str().is_some())
                    .ok_or(ProxyError::Invalid { url: text.clone() })?;
                policy
                    .vet_host(url.host_str().unwrap_or_default())
                    .map_err(|refused| ProxyError::Refused { url: text, refused })?;
                Some(url)
            }
        };
        Ok(Egress {
            policy: Arc::new(policy),
            proxy,
            lookup: system_lookup(),
        })
    }

    /// Names resolved by `lookup` instead of the system resolver (tests: a resolver stub).
    pub fn with_lookup(mut self, lookup: Lookup) -> Egress {
        self.lookup = lookup;
        self
    }

    pub fn proxy(&self) -> Option<&reqwest::Url> {
        self.proxy.as_ref()
    }

    pub fn resolver(&self) -> VettingResolver {
        VettingResolver {
            policy: self.policy.clone(),
            lookup: self.lookup.clone(),
        }
    }
}

/// Resolves a name and refuses the whole answer when any address in it is refused: a name
/// that also points somewhere internal is not one to connect to.
#[derive(Clone)]
pub struct VettingResolver {
    policy: Arc<EgressPolicy>,
    lookup: Lookup,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl VettingResolver {
    pub async fn resolve(&self, host: &str) -> Result<Vec<IpAddr>, BoxError> {
        let addresses = (self.lookup)(host.to_string()).await?;
        if addresses.is_empty() {
            return Err(format!("{host} has no address").into());
        }
        for address in &addresses {
            self.policy.vet(*address)?;
        }
        Ok(addresses)
    }

    fn resolving(&self, host: &str) -> BoxFuture<'static, Result<reqwest::dns::Addrs, BoxError>> {
        let (resolver, host) = (self.clone(), host.to_string());
        Box::pin(async move {
            let addresses = resolver.resolve(&host).await?;
            Ok(
                Box::new(addresses.into_iter().map(|ip| SocketAddr::new(ip, 0)))
                    as reqwest::dns::Addrs,
            )
        })
    }
}

impl reqwest::dns::Resolve for VettingResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        self.resolving(name.as_str())
    }
}

impl tower_service::Service<hyper_util::client::legacy::connect::dns::Name> for VettingResolver {
    type Response = reqwest::dns::Addrs;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<reqwest::dns::Addrs, BoxError>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: hyper_util::client::legacy::connect::dns::Name) -> Self::Future {
        self.resolving(name.as_str())
    }
}

/// The guard's refusal somewhere in an error's chain of causes.
pub fn refusal<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<Refused>() {
            return Some(r);
        }
        cur = e.source();
    }
    None
}
