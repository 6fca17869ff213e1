//! The guard as a hyper connector: what workers deliver through. Names go through the vetting
//! resolver; a host written as an address is vetted before dialling. Both happen once per
//! connection, so keep-alive requests cost nothing more.

use super::policy::EgressPolicy;
use super::{BoxError, Egress, VettingResolver};
use futures::future::BoxFuture;
use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::net::TcpStream;

#[derive(Clone)]
pub struct GuardedConnector {
    http: HttpConnector<VettingResolver>,
    policy: Arc<EgressPolicy>,
}

impl GuardedConnector {
    /// A plain-TCP connector (TLS is layered on top) with `HttpConnector`'s settings.
    pub fn new(
        egress: &Egress,
        configure: impl FnOnce(&mut HttpConnector<VettingResolver>),
    ) -> Self {
        let mut http = HttpConnector::new_with_resolver(egress.resolver());
        configure(&mut http);
        GuardedConnector {
            http,
            policy: egress.policy.clone(),
        }
    }
}

impl tower_service::Service<Uri> for GuardedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<TokioIo<TcpStream>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        if let Err(refused) = self.policy.vet_host(uri.host().unwrap_or_default()) {
            return Box::pin(std::future::ready(Err(refused.into())));
        }
        let connecting = self.http.call(uri);
        Box::pin(async move { connecting.await.map_err(Into::into) })
    }
}
