//! The operator under test: the real controller against the in-process API server, and what
//! tests do with it (create resources, play the Deployment controller, wait for conditions).

use super::apiserver::ApiServer;
use super::free_port;
use hookline::api::WebhookDestination;
use hookline::controller::operator::{self, OperatorOptions};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use serde_json::json;
use std::future::Future;
use std::time::{Duration, Instant};
use tokio::sync::watch;

pub const NS: &str = "analytics";

pub struct Operator {
    pub server: ApiServer,
    pub client: Client,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub port: u16,
}

pub fn options(leader_election: Option<&str>, identity: &str, port: u16) -> OperatorOptions {
    OperatorOptions {
        leader_election: leader_election.map(str::to_string),
        identity: identity.into(),
        ..super::operator_options(port)
    }
}

impl Operator {
    pub async fn start() -> Operator {
        Operator::start_on(ApiServer::new(), None, "op-1").await
    }

    pub async fn start_on(server: ApiServer, lease: Option<&str>, identity: &str) -> Operator {
        Operator::launch(server, options(lease, identity, free_port()))
    }

    pub fn launch(server: ApiServer, opts: OperatorOptions) -> Operator {
        let client = server.client();
        Operator::launch_with(server, client, opts)
    }

    /// An operator talking to its API server over HTTP, as in a cluster: it can port-forward
    /// to worker pods (test events, API §11).
    pub async fn start_over_http() -> Operator {
        let server = ApiServer::new();
        let client = server.http_client().await;
        Operator::launch_with(server, client, options(None, "op-1", free_port()))
    }

    pub fn launch_with(server: ApiServer, client: Client, opts: OperatorOptions) -> Operator {
        let (stop, shutdown) = watch::channel(false);
        let port = opts.listen.port();
        let task = tokio::spawn(operator::run(client.clone(), opts, shutdown));
        Operator {
            server,
            client,
            stop,
            task,
            port,
        }
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        Api::namespaced(self.client.clone(), NS)
    }

    pub async fn create_destination(&self, yaml: &str) -> WebhookDestination {
        let dest: WebhookDestination = serde_saphyr::from_str(yaml).unwrap();
        self.api()
            .create(&PostParams::default(), &dest)
            .await
            .unwrap()
    }

    pub async fn create_secret(&self, name: &str, data: serde_json::Value) {
        let secret: Secret = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": NS},
            "stringData": data,
        }))
        .unwrap();
        self.api::<Secret>()
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
    }

    pub async fn destination(&self, name: &str) -> WebhookDestination {
        self.api().get(name).await.unwrap()
    }

    /// A Deployment, once the operator has applied it.
    pub async fn deployment(&self, name: &str) -> Deployment {
        eventually(&format!("the Deployment {name}"), || async {
            self.api::<Deployment>().get_opt(name).await.unwrap()
        })
        .await
    }

    /// Plays the Deployment controller: every replica is up to date and available.
    pub async fn make_available(&self, name: &str) {
        let api: Api<Deployment> = self.api();
        let d = api.get(name).await.unwrap();
        let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let status = json!({"status": {
            "observedGeneration": d.metadata.generation,
            "replicas": replicas, "updatedReplicas": replicas,
            "readyReplicas": replicas, "availableReplicas": replicas,
        }});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
            .await
            .unwrap();
    }

    pub async fn ready(&self) -> bool {
        reqwest::get(format!("http://127.0.0.1:{}/readyz", self.port))
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    /// An operator with `orders` (Bearer, its Secret `crm`) deployed and `Ready`.
    pub async fn with_a_ready_destination() -> Operator {
        let op = Operator::start().await;
        op.create_secret("crm", json!({"token": "t"})).await;
        op.create_destination(&bearer_destination("orders", ""))
            .await;
        wait_condition(&op, "orders", "WorkerAvailable", "False").await;
        op.make_available("orders-hookline").await;
        wait_condition(&op, "orders", "Ready", "True").await;
        op
    }

    /// Deletes a child Service, as drift, and waits for the operator to recreate it.
    pub async fn delete_service_and_wait_for_it(&self, name: &str) {
        self.api::<Service>()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
        eventually("the deleted Service to be recreated", || async {
            self.api::<Service>().get_opt(name).await.unwrap()
        })
        .await;
    }

    /// Serves the API server over HTTP and writes a kubeconfig for a `hookline` process; the
    /// file lives as long as the returned directory.
    pub async fn kubeconfig(&self) -> (tempfile::TempDir, std::path::PathBuf) {
        let addr = self.server.serve().await;
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, ApiServer::kubeconfig(addr, NS)).unwrap();
        (dir, kubeconfig)
    }

    /// Waits for a Warning Event with `reason`.
    pub async fn warning_event(&self, reason: &str) -> serde_json::Value {
        eventually(&format!("a Warning event {reason}"), || async {
            self.server
                .objects("events.k8s.io/v1/events")
                .into_iter()
                .find(|e| e["reason"] == reason && e["type"] == "Warning")
        })
        .await
    }

    /// `orders`, sending to `endpoint` with the bearer `token` (its Secret `crm`), accepted;
    /// returns its manifest.
    pub async fn bearer_destination_to(&self, endpoint: &super::Endpoint, token: &str) -> String {
        self.create_secret("crm", json!({"token": token})).await;
        let yaml = bearer_destination("orders", "").replace(
            "https://crm.example.com/api/events",
            &format!("{}/in", endpoint.url),
        );
        self.create_destination(&yaml).await;
        wait_condition(self, "orders", "Accepted", "True").await;
        yaml
    }

    /// Plays the kubelet for one ready worker pod of the destination in `yaml`: a real
    /// `hookline run` of it (with `secrets`, a Secret `crm`, and `extra` flags), whose loopback
    /// admin port the API server forwards the pod's port 9091 to, as a real API server does.
    pub async fn worker_pod(
        &self,
        yaml: &str,
        secrets: serde_json::Value,
        extra: &[&str],
    ) -> (tempfile::TempDir, super::Hookline) {
        let dir = tempfile::tempdir().unwrap();
        let secret = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "crm", "namespace": NS}, "stringData": secrets});
        let files = [
            super::manifest(dir.path(), "d.yaml", yaml),
            super::manifest(dir.path(), "s.yaml", &secret.to_string()),
        ];
        let worker = super::Hookline::start_with(&files, &dir.path().join("data"), extra).await;
        let dest: WebhookDestination = serde_saphyr::from_str(yaml).unwrap();
        let name = dest.metadata.name.unwrap();
        let pod = format!("{name}-hookline-7f9c-x2");
        let created: Pod = serde_json::from_value(json!({
            "metadata": {"name": pod, "namespace": NS,
                "labels": hookline::controller::build::selector_labels(&name)},
        }))
        .unwrap();
        let pods = self.api::<Pod>();
        pods.create(&PostParams::default(), &created).await.unwrap();
        let ready = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        pods.patch_status(&pod, &PatchParams::default(), &Patch::Merge(ready))
            .await
            .unwrap();
        let admin = worker.admin.clone().unwrap();
        self.server
            .forward_pod_port(NS, &pod, 9091, admin.trim_start_matches("http://"));
        (dir, worker)
    }

    /// `hookline test NAME -n NS` as a user runs it: a real process, the API server over HTTP.
    pub async fn hookline_test(&self, name: &str, extra: &[&str]) -> std::process::Output {
        let (_dir, kubeconfig) = self.kubeconfig().await;
        let mut command = std::process::Command::new(super::bin());
        command
            .args(["test", name, "-n", NS, "--timeout", "20"])
            .args(extra)
            .env("KUBECONFIG", &kubeconfig);
        tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap()
    }

    pub async fn stop(self) {
        self.stop.send(true).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

/// Polls `check` until it returns `Some`, failing with `what` after a deadline.
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `(status, reason, message)` of a condition.
pub fn condition(d: &WebhookDestination, kind: &str) -> Option<(String, String, String)> {
    d.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

pub async fn wait_condition(
    op: &Operator,
    name: &str,
    kind: &str,
    status: &str,
) -> (WebhookDestination, String, String) {
    eventually(&format!("{name}: {kind}={status}"), || async {
        let d = op.destination(name).await;
        match condition(&d, kind) {
            Some((s, reason, message)) if s == status => Some((d, reason, message)),
            _ => None,
        }
    })
    .await
}

pub fn bearer_destination(name: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: hookline.dev/v1alpha1
kind: WebhookDestination
metadata: {{ name: {name}, namespace: {NS} }}
spec:
  endpoint: {{ url: "https://crm.example.com/api/events" }}
  auth:
    type: Bearer
    bearer: {{ tokenSecretRef: {{ name: crm, key: token }} }}
  mapping: {{ id: {{ "@path": "$.messageId" }} }}
{extra}"#
    )
}
