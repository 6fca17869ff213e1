//! The desired children of a WebhookDestination, built purely from the resource: the worker's
//! ConfigMap, its ServiceAccount, Deployment and Service. No API calls here; `apply` sends them.

use crate::api::{AuthType, GrantType, WebhookDestination};
use crate::config::destination::token_secret_name;
use crate::config::worker::WorkerConfig;
use crate::jetstream::identity::Permissions;
use crate::jetstream::names::DestinationNames;
use crate::pipeline::source::RouteSpec;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, HTTPGetAction, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, Secret, SecretKeySelector, SecretVolumeSource,
    SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

pub const INGEST_PORT: i32 = 8080;
pub const CONFIG_KEY: &str = "worker.yaml";
pub const CONFIG_HASH_ANNOTATION: &str = "hookline.dev/config-hash";
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "hookline");
const CONFIG_DIR: &str = "/etc/hookline/config";
const SECRETS_DIR: &str = "/etc/hookline/secrets";
const DATA_DIR: &str = "/var/lib/hookline";
/// The distroless `nonroot` user the image runs as.
const RUN_AS: i64 = 65532;

/// What the operator decides outside the resource.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The worker image when `spec.worker.image` is empty: the operator's own.
    pub default_image: String,
    /// JetStream mode (API §8); `None` is local mode.
    pub jetstream: Option<JetStreamOptions>,
    /// Settings of the operator's own environment passed on to every worker: its log format and
    /// OpenTelemetry (`OTEL_*`) settings.
    pub passed_env: BTreeMap<String, String>,
    /// The workers' egress flags (API §11), from the chart's `egress` values; none by default.
    pub egress_args: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct JetStreamOptions {
    /// What workers pass as `--nats`.
    pub url: String,
    /// The operator's own NATS credentials (`token`, `user`, `password`, `creds`, `ca.crt`):
    /// copied into a Secret beside each destination's workers, never into its ConfigMap.
    pub credentials: BTreeMap<String, String>,
    /// The gateway's URL: `status.ingestUrl` of destinations with a write key.
    pub gateway_url: Option<String>,
    /// Identities per role (API §10): each destination's workers get a short-lived identity of
    /// their own instead of a copy of the operator's credentials.
    pub identities: Option<std::sync::Arc<crate::jetstream::identity::Identities>>,
}

/// Seconds Kubernetes gives a worker between SIGTERM and SIGKILL.
const GRACE_SECONDS: i64 = 30;

/// Every child, ready to be applied.
#[derive(Debug, Clone)]
pub struct Children {
    pub config_map: ConfigMap,
    pub service_account: ServiceAccount,
    pub deployment: Deployment,
    pub service: Service,
    /// JetStream mode with NATS credentials: the workers' copy of them.
    pub nats_secret: Option<Secret>,
}

/// Where a worker finds the NATS credentials Secret.
const NATS_DIR: &str = "/etc/hookline/nats";

pub fn nats_secret_name(dest: &WebhookDestination) -> String {
    format!("{}-nats", child_name(dest))
}

/// The workers' NATS Secret as the build knows it: a copy of the operator's credentials, or —
/// with identities per role — only the CA, their own identity being issued (and renewed) into
/// it at apply time under [`IDENTITY_KEY`].
struct WorkersNats {
    data: BTreeMap<String, String>,
    own_identity: bool,
}

impl WorkersNats {
    /// `None` when the workers need no such Secret.
    fn of(opts: &BuildOptions) -> Option<WorkersNats> {
        let js = opts.jetstream.as_ref()?;
        let own_identity = js.identities.is_some();
        let data: BTreeMap<String, String> = js
            .credentials
            .iter()
            .filter(|(k, _)| !own_identity || *k == "ca.crt")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        (own_identity || !data.is_empty()).then_some(WorkersNats { data, own_identity })
    }

    fn holds(&self, key: &str) -> bool {
        self.data.contains_key(key) || (self.own_identity && key == IDENTITY_KEY)
    }
}

/// The key of the workers' NATS Secret that holds their `.creds` file.
pub const IDENTITY_KEY: &str = "creds";

/// `<name>-hookline`: the name of every child, and the Service's DNS name.
pub fn child_name(dest: &WebhookDestination) -> String {
    format!("{}-hookline", dest.name_any())
}

/// Where the destination's events are sent: the gateway for a destination reading a source (a
/// WebhookSource or its private key) in JetStream mode, its own worker Service otherwise.
pub fn ingest_url(dest: &WebhookDestination, opts: &BuildOptions, reads_source: bool) -> String {
    let gateway = opts.jetstream.as_ref().and_then(|j| j.gateway_url.clone());
    if let (Some(gateway), true) = (gateway, reads_source) {
        return gateway;
    }
    format!(
        "http://{}.{}.svc:{INGEST_PORT}",
        child_name(dest),
        dest.namespace().unwrap_or_default()
    )
}

/// Local mode: the drain after SIGTERM, a little shorter than the grace period. JetStream
/// mode: where NATS is, and its credentials from the workers' Secret (never the ConfigMap):
/// what that Secret holds, not what the operator's own credentials are.
fn worker_env(
    dest: &WebhookDestination,
    opts: &BuildOptions,
    nats: Option<&WorkersNats>,
) -> Vec<EnvVar> {
    let value = |name: &str, value: String| EnvVar {
        name: name.into(),
        value: Some(value),
        ..EnvVar::default()
    };
    let mut env: Vec<EnvVar> = opts
        .passed_env
        .iter()
        .map(|(name, v)| value(name, v.clone()))
        .collect();
    let Some(js) = &opts.jetstream else {
        env.push(value(
            "HOOKLINE_DRAIN_SECONDS",
            (GRACE_SECONDS - 5).to_string(),
        ));
        return env;
    };
    env.push(value("HOOKLINE_NATS_URL", js.url.clone()));
    for (name, key) in [
        ("HOOKLINE_NATS_TOKEN", "token"),
        ("HOOKLINE_NATS_USER", "user"),
        ("HOOKLINE_NATS_PASSWORD", "password"),
    ] {
        if nats.is_some_and(|n| n.holds(key)) {
            env.push(EnvVar {
                name: name.into(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: nats_secret_name(dest),
                        key: key.into(),
                        optional: None,
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            });
        }
    }
    for (name, key) in [
        ("HOOKLINE_NATS_CREDS", IDENTITY_KEY),
        ("HOOKLINE_NATS_CA", "ca.crt"),
    ] {
        if nats.is_some_and(|n| n.holds(key)) {
            env.push(value(name, format!("{NATS_DIR}/{key}")));
        }
    }
    if js.identities.is_some() {
        let names = DestinationNames::new(&dest.namespace().unwrap_or_default(), &dest.name_any());
        env.push(value(
            "HOOKLINE_NATS_INBOX",
            Permissions::worker(&names).inbox,
        ));
    }
    env
}

/// The labels that pick a destination's worker pods (its Deployment's and Service's selector).
pub fn selector_labels(destination: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "hookline-worker".into()),
        ("app.kubernetes.io/instance".into(), destination.into()),
    ])
}

pub(crate) fn labels(dest: &WebhookDestination) -> BTreeMap<String, String> {
    let mut labels = selector_labels(&dest.name_any());
    labels.insert("app.kubernetes.io/component".into(), "worker".into());
    labels.insert(MANAGED_BY.0.into(), MANAGED_BY.1.into());
    labels.insert("app.kubernetes.io/part-of".into(), "hookline".into());
    labels
}

fn meta(dest: &WebhookDestination) -> ObjectMeta {
    ObjectMeta {
        name: Some(child_name(dest)),
        namespace: dest.namespace(),
        labels: Some(labels(dest)),
        owner_references: dest.controller_owner_ref(&()).map(|r| vec![r]),
        ..ObjectMeta::default()
    }
}

/// The worker's configuration file: the resource as the user wrote it (no status, no server
/// metadata), the route of the WebhookSource it reads, and where the pod finds its Secrets and
/// keeps its queue.
pub fn worker_config(dest: &WebhookDestination, source: Option<&RouteSpec>) -> WorkerConfig {
    let mut destination = WebhookDestination::new(&dest.name_any(), dest.spec.clone());
    destination.metadata.namespace = dest.namespace();
    WorkerConfig {
        destination,
        secrets_dir: SECRETS_DIR.into(),
        data_dir: DATA_DIR.into(),
        listen: ([0, 0, 0, 0], INGEST_PORT as u16).into(),
        source: source.cloned(),
    }
}

/// `source`: the route of the WebhookSource the destination reads (its `sourceRef`, admitted).
pub fn build(
    dest: &WebhookDestination,
    opts: &BuildOptions,
    source: Option<&RouteSpec>,
) -> Children {
    let config = serde_saphyr::to_string(&worker_config(dest, source))
        .expect("the worker configuration serializes");
    let nats = WorkersNats::of(opts);
    // Rotated NATS credentials roll the workers too (environment variables are read once); an
    // identity of their own is followed in its file, so its renewals roll nothing.
    let mut digest = Sha256::new();
    digest.update(config.as_bytes());
    for (k, v) in nats.iter().flat_map(|n| &n.data) {
        digest.update(k.as_bytes());
        digest.update(v.as_bytes());
    }
    let hash = hex::encode(digest.finalize());
    Children {
        config_map: ConfigMap {
            metadata: meta(dest),
            data: Some(BTreeMap::from([(CONFIG_KEY.to_string(), config)])),
            ..ConfigMap::default()
        },
        service_account: ServiceAccount {
            metadata: meta(dest),
            automount_service_account_token: Some(false),
            ..ServiceAccount::default()
        },
        deployment: deployment(dest, opts, &hash, nats.as_ref()),
        service: Service {
            metadata: meta(dest),
            spec: Some(ServiceSpec {
                selector: Some(selector_labels(&dest.name_any())),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: INGEST_PORT,
                    target_port: Some(IntOrString::String("http".into())),
                    protocol: Some("TCP".into()),
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        },
        nats_secret: nats.as_ref().map(|WorkersNats { data, .. }| Secret {
            metadata: ObjectMeta {
                name: Some(nats_secret_name(dest)),
                ..meta(dest)
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.clone(), ByteString(v.clone().into_bytes())))
                    .collect(),
            ),
            ..Secret::default()
        }),
    }
}

/// The Secrets the worker mounts, at `SECRETS_DIR/<name>`: one volume per referenced Secret,
/// and (optional, as it appears only once someone consents) the token Secret an
/// AuthorizationCode worker follows. `(name, optional)`.
fn secret_mounts(dest: &WebhookDestination) -> Vec<(String, bool)> {
    let mut names: Vec<(String, bool)> = dest
        .spec
        .secret_refs()
        .into_iter()
        .map(|(_, r)| (r.name.clone(), false))
        .collect();
    let authorization_code = dest
        .spec
        .auth
        .as_ref()
        .filter(|a| a.kind == AuthType::OAuth2)
        .and_then(|a| a.oauth2.as_ref())
        .is_some_and(|o| o.grant_type == GrantType::AuthorizationCode);
    if authorization_code {
        names.push((token_secret_name(&dest.name_any()), true));
    }
    names.sort();
    names.dedup();
    names
}

fn deployment(
    dest: &WebhookDestination,
    opts: &BuildOptions,
    config_hash: &str,
    nats: Option<&WorkersNats>,
) -> Deployment {
    let worker = dest.spec.worker.clone().unwrap_or_default();
    let replicas = if dest.spec.is_enabled() {
        worker.replicas.unwrap_or(1)
    } else {
        0
    };
    let image = worker
        .image
        .filter(|i| !i.trim().is_empty())
        .unwrap_or_else(|| opts.default_image.clone());

    let mut volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: child_name(dest),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "data".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    ];
    let mut mounts = vec![
        VolumeMount {
            name: "config".into(),
            mount_path: CONFIG_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "data".into(),
            mount_path: DATA_DIR.into(),
            ..VolumeMount::default()
        },
    ];
    if nats.is_some() {
        mounts.push(VolumeMount {
            name: "nats".into(),
            mount_path: NATS_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: "nats".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(nats_secret_name(dest)),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    for (i, (secret, optional)) in secret_mounts(dest).into_iter().enumerate() {
        let volume = format!("secret-{i}");
        mounts.push(VolumeMount {
            name: volume.clone(),
            mount_path: format!("{SECRETS_DIR}/{secret}"),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: volume,
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret),
                optional: optional.then_some(true),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }

    let probe = |path: &str, period: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        // The worker serves these from its ingestion threads, which yield the CPU to delivery
        // (see `runtimes`): with a CPU limit that delivery alone fills, an answer measured
        // up to a third of a second, too close to the kubelet's default of one.
        timeout_seconds: Some(PROBE_TIMEOUT_SECONDS),
        ..Probe::default()
    };
    let container = Container {
        name: "worker".into(),
        image: Some(image),
        args: Some(
            [
                "worker".into(),
                "--config".into(),
                format!("{CONFIG_DIR}/{CONFIG_KEY}"),
            ]
            .into_iter()
            .chain(opts.egress_args.iter().cloned())
            .collect(),
        ),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: INGEST_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        env: Some(worker_env(dest, opts, nats)),
        readiness_probe: Some(probe("/readyz", 5)),
        liveness_probe: Some(probe("/healthz", 10)),
        resources: Some(worker.resources.unwrap_or_else(default_resources)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(mounts),
        ..Container::default()
    };

    let template_meta = ObjectMeta {
        labels: Some(labels(dest)),
        annotations: Some(BTreeMap::from([(
            CONFIG_HASH_ANNOTATION.to_string(),
            config_hash.to_string(),
        )])),
        ..ObjectMeta::default()
    };
    Deployment {
        metadata: meta(dest),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&dest.name_any())),
                ..LabelSelector::default()
            },
            // Each pod has its own queue: a new pod takes traffic before an old one drains.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                ..DeploymentStrategy::default()
            }),
            template: PodTemplateSpec {
                metadata: Some(template_meta),
                spec: Some(PodSpec {
                    service_account_name: Some(child_name(dest)),
                    automount_service_account_token: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUN_AS),
                        run_as_group: Some(RUN_AS),
                        fs_group: Some(RUN_AS),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    termination_grace_period_seconds: Some(GRACE_SECONDS),
                    containers: vec![container],
                    volumes: Some(volumes),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

const PROBE_TIMEOUT_SECONDS: i32 = 5;

fn default_resources() -> ResourceRequirements {
    let q = |s: &str| Quantity(s.to_string());
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".into(), q("100m")),
            ("memory".into(), q("64Mi")),
        ])),
        limits: Some(BTreeMap::from([("memory".into(), q("256Mi"))])),
        ..ResourceRequirements::default()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::secrets::SecretStore;
    use std::collections::HashMap;

    pub fn fixture(name: &str) -> WebhookDestination {
        let text = match name {
            "full" => include_str!("fixtures/full.yaml"),
            "minimal" => include_str!("fixtures/minimal.yaml"),
            other => panic!("no fixture {other}"),
        };
        serde_saphyr::from_str(text).unwrap()
    }

    /// The fixture Secrets, in `namespace`.
    pub fn secrets(namespace: &str) -> SecretStore {
        #[derive(serde::Deserialize)]
        struct Fixture {
            name: String,
            data: HashMap<String, String>,
        }
        let list: Vec<Fixture> =
            serde_saphyr::from_str(include_str!("fixtures/secrets.yaml")).unwrap();
        let mut store = SecretStore::default();
        for s in list {
            let data = s
                .data
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            store.insert(namespace, &s.name, data);
        }
        store
    }

    fn opts() -> BuildOptions {
        BuildOptions {
            default_image: "hookline:operator".into(),
            jetstream: None,
            passed_env: BTreeMap::new(),
            egress_args: Vec::new(),
        }
    }

    fn pod(children: &Children) -> PodSpec {
        children
            .deployment
            .spec
            .clone()
            .unwrap()
            .template
            .spec
            .unwrap()
    }

    #[test]
    fn every_child_is_named_labelled_and_owned() {
        let dest = fixture("full");
        let c = build(&dest, &opts(), None);
        let metas = [
            &c.config_map.metadata,
            &c.service_account.metadata,
            &c.deployment.metadata,
            &c.service.metadata,
        ];
        for meta in metas {
            assert_eq!(meta.name.as_deref(), Some("orders-to-crm-hookline"));
            assert_eq!(meta.namespace.as_deref(), Some("analytics"));
            let owner = &meta.owner_references.as_ref().unwrap()[0];
            assert_eq!(owner.uid, "6f1c2b8e-0000-4000-8000-000000000001");
            assert_eq!(owner.kind, "WebhookDestination");
            assert_eq!(owner.controller, Some(true));
            assert_eq!(meta.labels.as_ref().unwrap()[MANAGED_BY.0], MANAGED_BY.1);
        }
        let selector = c.service.spec.unwrap().selector.unwrap();
        let template_labels = c
            .deployment
            .spec
            .unwrap()
            .template
            .metadata
            .unwrap()
            .labels
            .unwrap();
        assert!(
            selector
                .iter()
                .all(|(k, v)| template_labels.get(k) == Some(v))
        );
    }

    #[test]
    fn only_ingestion_is_exposed_the_dead_letters_stay_on_the_pods_loopback() {
        let c = build(&fixture("full"), &opts(), None);
        let pod = pod(&c);
        let worker = &pod.containers[0];
        let declared: Vec<i32> = worker
            .ports
            .iter()
            .flatten()
            .map(|p| p.container_port)
            .collect();
        assert_eq!(declared, [INGEST_PORT]);
        let exposed: Vec<i32> = c
            .service
            .spec
            .unwrap()
            .ports
            .unwrap()
            .iter()
            .map(|p| p.port)
            .collect();
        assert_eq!(exposed, [INGEST_PORT]);
        // The admin listener keeps its loopback default: no flag or variable moves it.
        let args = worker.args.clone().unwrap_or_default();
        assert!(!args.iter().any(|a| a.contains("admin")), "{args:?}");
        assert!(
            !worker
                .env
                .iter()
                .flatten()
                .any(|e| e.name.contains("ADMIN")),
            "{:?}",
            worker.env
        );
    }

    #[test]
    fn with_identities_per_role_the_workers_get_their_own_not_the_operators_credentials() {
        let account = nkeys::KeyPair::new_account();
        let signing = nkeys::KeyPair::new_account();
        let issuer = crate::jetstream::identity::Issuer::new(
            &signing.seed().unwrap(),
            &account.public_key(),
            "test",
        )
        .unwrap();
        let mut opts = opts();
        opts.jetstream = Some(JetStreamOptions {
            url: "nats://nats:4222".into(),
            credentials: BTreeMap::from([
                ("token".into(), "operator-token".into()),
                ("ca.crt".into(), "CA".into()),
            ]),
            gateway_url: None,
            identities: Some(std::sync::Arc::new(
                crate::jetstream::identity::Identities {
                    issuer,
                    lifetime: std::time::Duration::from_secs(3600),
                },
            )),
        });
        let c = build(&fixture("full"), &opts, None);
        let data = c.nats_secret.clone().unwrap().data.unwrap();
        assert_eq!(data.keys().collect::<Vec<_>>(), ["ca.crt"]);
        let env = pod(&c).containers[0].env.clone().unwrap();
        let names: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
        assert!(!names.contains(&"HOOKLINE_NATS_TOKEN"), "{names:?}");
        for name in [
            "HOOKLINE_NATS_CREDS",
            "HOOKLINE_NATS_CA",
            "HOOKLINE_NATS_INBOX",
        ] {
            assert!(names.contains(&name), "{name} in {names:?}");
        }
    }

    #[test]
    fn each_referenced_secret_is_mounted_once_where_the_config_says() {
        let dest = fixture("full");
        let c = build(&dest, &opts(), None);
        let pod = pod(&c);
        let mounted: Vec<(String, String)> = pod
            .volumes
            .unwrap()
            .iter()
            .filter_map(|v| Some((v.name.clone(), v.secret.as_ref()?.secret_name.clone()?)))
            .collect();
        let names: Vec<&str> = mounted.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(names, ["crm-credentials", "crm-signing", "orders-source"]);
        let mounts = pod.containers[0].volume_mounts.clone().unwrap();
        for (volume, secret) in &mounted {
            let m = mounts.iter().find(|m| &m.name == volume).unwrap();
            assert_eq!(m.mount_path, format!("{SECRETS_DIR}/{secret}"));
            assert_eq!(m.read_only, Some(true));
        }
        let config: WorkerConfig =
            serde_saphyr::from_str(&c.config_map.data.unwrap()[CONFIG_KEY]).unwrap();
        assert_eq!(config.secrets_dir, std::path::Path::new(SECRETS_DIR));
    }

    #[test]
    fn the_rendered_config_resolves_against_mounted_secrets_and_holds_none() {
        let dest = fixture("full");
        let c = build(&dest, &opts(), None);
        let text = &c.config_map.data.unwrap()[CONFIG_KEY];
        for secret in ["key-123", "tok-456", "whsec_", "wk-789"] {
            assert!(!text.contains(secret), "the ConfigMap holds {secret}");
        }
        let config: WorkerConfig = serde_saphyr::from_str(text).unwrap();
        let resolved = config.resolve(&secrets("analytics")).unwrap();
        assert_eq!(resolved.name, "orders-to-crm");
        assert_eq!(
            resolved.source.unwrap().digest,
            crate::jetstream::names::KeyDigest::of("wk-789")
        );
        assert!(config.destination.status.is_none());
    }

    #[test]
    fn worker_overrides_and_defaults() {
        let full = build(&fixture("full"), &opts(), None);
        let d = full.deployment.spec.clone().unwrap();
        assert_eq!(d.replicas, Some(2));
        let container = &pod(&full).containers[0];
        assert_eq!(
            container.image.as_deref(),
            Some("registry.example.com/hookline:custom")
        );
        let requests = container.resources.clone().unwrap().requests.unwrap();
        assert_eq!(requests["memory"].0, "128Mi");

        let minimal = build(&fixture("minimal"), &opts(), None);
        assert_eq!(minimal.deployment.spec.clone().unwrap().replicas, Some(1));
        let pod = pod(&minimal);
        let container = &pod.containers[0];
        assert_eq!(container.image.as_deref(), Some("hookline:operator"));
        assert_eq!(
            container.resources.clone().unwrap().limits.unwrap()["memory"].0,
            "256Mi"
        );
        assert_eq!(
            pod.volumes.unwrap().len(),
            2,
            "no Secret volumes without references"
        );
        let psc = pod.security_context.unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
        let csc = container.security_context.clone().unwrap();
        assert_eq!(csc.capabilities.unwrap().drop.unwrap(), ["ALL"]);
        assert_eq!(pod.automount_service_account_token, Some(false));
    }

    #[test]
    fn disabled_means_zero_replicas() {
        let mut dest = fixture("full");
        dest.spec.enabled = Some(false);
        let d = build(&dest, &opts(), None).deployment.spec.unwrap();
        assert_eq!(d.replicas, Some(0));
    }

    #[test]
    fn workers_get_the_environment_the_operator_passes_on() {
        let env_of = |opts: &BuildOptions| {
            pod(&build(&fixture("full"), opts, None)).containers[0]
                .env
                .clone()
                .unwrap_or_default()
        };
        let format = |env: &[EnvVar]| {
            env.iter()
                .find(|e| e.name == "HOOKLINE_LOG_FORMAT")
                .and_then(|e| e.value.clone())
        };
        assert_eq!(format(&env_of(&opts())), None);
        let json = BuildOptions {
            passed_env: BTreeMap::from([("HOOKLINE_LOG_FORMAT".into(), "json".into())]),
            ..opts()
        };
        assert_eq!(format(&env_of(&json)).as_deref(), Some("json"));
    }

    /// The annotation that rolls the workers when their configuration changes.
    fn config_hash(c: &Children) -> String {
        c.deployment
            .spec
            .clone()
            .unwrap()
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap()[CONFIG_HASH_ANNOTATION]
            .clone()
    }

    #[test]
    fn the_config_hash_follows_the_config_and_nothing_else() {
        let hash = |d: &WebhookDestination| config_hash(&build(d, &opts(), None));
        let dest = fixture("full");
        let mut relabelled = dest.clone();
        relabelled.metadata.labels = Some(BTreeMap::from([("team".into(), "growth".into())]));
        relabelled.metadata.generation = Some(9);
        assert_eq!(hash(&dest), hash(&relabelled));
        let mut edited = dest.clone();
        edited.spec.subscription = Some("type = \"identify\"".into());
        assert_ne!(hash(&dest), hash(&edited));
    }

    #[test]
    fn ingest_url_is_the_service_dns_name() {
        assert_eq!(
            ingest_url(&fixture("full"), &opts(), true),
            "http://orders-to-crm-hookline.analytics.svc:8080"
        );
    }

    #[test]
    fn a_worker_reading_a_source_takes_its_route_from_the_config() {
        use crate::jetstream::names::{KeyDigest, SourceNames};
        let names = SourceNames::new("shop", "website");
        let route =
            RouteSpec::of_source(&names, &Default::default(), &KeyDigest::of("k"), "r".into());
        let c = build(&fixture("minimal"), &opts(), Some(&route));
        let text = &c.config_map.data.unwrap()[CONFIG_KEY];
        let config: WorkerConfig = serde_saphyr::from_str(text).unwrap();
        assert_eq!(config.source.as_ref(), Some(&route));
        assert!(!text.contains("\"k\""), "the digest, never the key");
        let hash = config_hash;
        assert_ne!(
            hash(&build(&fixture("minimal"), &opts(), None)),
            hash(&build(&fixture("minimal"), &opts(), Some(&route))),
            "a new key rolls the workers"
        );
    }
}
