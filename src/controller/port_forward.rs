//! One HTTP request to a loopback port of a destination's worker pod, through the API server's
//! port-forward (API §10, §11): governed by RBAC (`pods` get/list, `pods/portforward` create),
//! and never through a port that a Service exposes. The CLI reaches dead letters this way with
//! a person's kubeconfig; the operator has a worker send a test event this way.

use super::build::selector_labels;
use anyhow::{Context, anyhow, bail};
use axum::http::{Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use kube::core::ResourceExt;

/// A worker pod of `destination` that is ready, or an error saying why there is none.
async fn ready_worker(
    pods: &Api<Pod>,
    namespace: &str,
    destination: &str,
) -> anyhow::Result<String> {
    let selector = selector_labels(destination)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let listed = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| forbidden_or(e, &format!("cannot list the worker pods of WebhookDestination {namespace}/{destination} (RBAC: pods get/list in {namespace})")))?;
    listed
        .items
        .iter()
        .find(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
        .map(|p| p.name_any())
        .ok_or_else(|| {
            anyhow!(
                "no worker pod of WebhookDestination {namespace}/{destination} is ready ({} found with -l {selector}); is it enabled and running? `kubectl get whd {destination} -n {namespace}`",
                listed.items.len()
            )
        })
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A refusal by RBAC says so; anything else keeps `context`.
fn forbidden_or(e: kube::Error, context: &str) -> anyhow::Error {
    match &e {
        kube::Error::Api(status) if status.code == 403 => {
            anyhow!("{context}: not allowed by RBAC: {}", status.message)
        }
        _ => anyhow::Error::new(e).context(context.to_string()),
    }
}

/// Sends `method path` (with a JSON `body`, when given) to `port` on a ready worker pod's
/// loopback and returns the 2xx answer's body.
pub async fn request(
    client: &kube::Client,
    namespace: &str,
    destination: &str,
    port: u16,
    (method, path): (Method, &str),
    body: Option<Vec<u8>>,
) -> anyhow::Result<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod = ready_worker(&pods, namespace, destination).await?;
    let mut forwarder = pods.portforward(&pod, &[port]).await.map_err(|e| {
        forbidden_or(
            e,
            &format!("cannot port-forward to pod {namespace}/{pod} (RBAC: pods/portforward create in {namespace})"),
        )
    })?;
    let stream = forwarder
        .take_stream(port)
        .expect("the one port asked for is there");
    let answer = async {
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, format!("127.0.0.1:{port}"));
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(bytes::Bytes::from(body.unwrap_or_default())))
            .expect("a valid request");
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok::<_, hyper::Error>((status, body))
    }
    .await;
    forwarder.abort();
    let (status, body) = answer.with_context(|| {
        format!("pod {namespace}/{pod} did not answer {method} {path} on its admin port {port} (is its --admin-listen 127.0.0.1:{port}?)")
    })?;
    let body = String::from_utf8_lossy(&body).into_owned();
    if !status.is_success() {
        bail!("pod {namespace}/{pod} answered {method} {path} with {status}: {body}");
    }
    Ok(body)
}
