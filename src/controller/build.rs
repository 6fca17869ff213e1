//! The desired children of a WebhookDestination, built purely from the resource: the worker's
//! ConfigMap, its ServiceAccount, Deployment and Service. No API calls here; `apply` sends them.

use crate::api::WebhookDestination;
use crate::config::worker::WorkerConfig;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    HTTPGetAction, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SeccompProfile, SecretVolumeSource, SecurityContext, Service, ServiceAccount, ServicePort,
    ServiceSpec, Volume, VolumeMount,
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
}

/// Every child, ready to be applied.
#[derive(Debug, Clone)]
pub struct Children {
    pub config_map: ConfigMap,
    pub service_account: ServiceAccount,
    pub deployment: Deployment,
    pub service: Service,
}

/// `<name>-hookline`: the name of every child, and the Service's DNS name.
pub fn child_name(dest: &WebhookDestination) -> String {
    format!("{}-hookline", dest.name_any())
}

pub fn ingest_url(dest: &WebhookDestination) -> String {
    format!(
        "http://{}.{}.svc:{INGEST_PORT}",
        child_name(dest),
        dest.namespace().unwrap_or_default()
    )
}

pub fn selector_labels(dest: &WebhookDestination) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "hookline-worker".into()),
        ("app.kubernetes.io/instance".into(), dest.name_any()),
    ])
}

fn labels(dest: &WebhookDestination) -> BTreeMap<String, String> {
    let mut labels = selector_labels(dest);
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
/// metadata), and where the pod finds its Secrets and keeps its queue.
pub fn worker_config(dest: &WebhookDestination) -> WorkerConfig {
    let mut destination = WebhookDestination::new(&dest.name_any(), dest.spec.clone());
    destination.metadata.namespace = dest.namespace();
    WorkerConfig {
        destination,
        secrets_dir: SECRETS_DIR.into(),
        data_dir: DATA_DIR.into(),
        listen: ([0, 0, 0, 0], INGEST_PORT as u16).into(),
    }
}

pub fn build(dest: &WebhookDestination, opts: &BuildOptions) -> Children {
    let config =
        serde_saphyr::to_string(&worker_config(dest)).expect("the worker configuration serializes");
    let hash = hex::encode(Sha256::digest(config.as_bytes()));
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
        deployment: deployment(dest, opts, &hash),
        service: Service {
            metadata: meta(dest),
            spec: Some(ServiceSpec {
                selector: Some(selector_labels(dest)),
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
    }
}

/// The Secrets the worker mounts: one volume per referenced Secret, at `SECRETS_DIR/<name>`.
fn secret_names(dest: &WebhookDestination) -> Vec<String> {
    let mut names: Vec<String> = dest
        .spec
        .secret_refs()
        .into_iter()
        .map(|(_, r)| r.name.clone())
        .collect();
    names.sort();
    names.dedup();
    names
}

fn deployment(dest: &WebhookDestination, opts: &BuildOptions, config_hash: &str) -> Deployment {
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
    for (i, secret) in secret_names(dest).into_iter().enumerate() {
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
        ..Probe::default()
    };
    let container = Container {
        name: "worker".into(),
        image: Some(image),
        args: Some(vec![
            "worker".into(),
            "--config".into(),
            format!("{CONFIG_DIR}/{CONFIG_KEY}"),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: INGEST_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
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
                match_labels: Some(selector_labels(dest)),
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
                    termination_grace_period_seconds: Some(30),
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
