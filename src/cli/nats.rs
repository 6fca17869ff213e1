//! `hookline nats setup`: what a NATS of your own needs for identities per role (API §10), in
//! place of the `nsc` recipe: Hookline's NATS keys (an operator, a system account, Hookline's
//! account and its signing key) and the servers' configuration made from them.

use crate::controller::nats_keys::{KeysSecrets, secret};
use crate::jetstream::keys::{ACCOUNT_KEY, NatsKeys, SERVER_CONFIG_KEY};
use anyhow::Context;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Print (or, with --apply, create in the cluster) Hookline's NATS keys and the NATS
    /// servers' configuration made from them
    Setup(Setup),
}

#[derive(clap::Args, Debug)]
struct Setup {
    /// The namespace Hookline's operator runs in: where its keys Secret goes (default: the
    /// kubeconfig's)
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// The Secret holding the keys' seeds, which only the operator reads (chart value
    /// nats.identities.keysSecretName)
    #[arg(long, default_value = "hookline-nats-keys")]
    keys_secret: String,
    /// The Secret holding the servers' configuration, `auth.conf`, for NATS pods to mount and
    /// include
    #[arg(long, default_value = "hookline-nats-server")]
    server_secret: String,
    /// Create the Secrets in the cluster with your kubeconfig (keys already there are kept),
    /// and print only the servers' configuration
    #[arg(long)]
    apply: bool,
}

pub async fn nats(args: Args) -> anyhow::Result<i32> {
    let Action::Setup(setup) = args.action;
    if setup.apply {
        apply(&setup).await
    } else {
        print(&setup)
    }
}

/// New keys, as manifests to apply (`| kubectl apply -f -`).
fn print(setup: &Setup) -> anyhow::Result<i32> {
    let keys = NatsKeys::generate();
    let namespace = setup.namespace.as_deref().unwrap_or("hookline-system");
    let mut seeds = keys.seeds();
    seeds.insert(ACCOUNT_KEY.into(), keys.account());
    let config = keys.server_config()?;
    let manifests = [
        secret(&setup.keys_secret, seeds),
        secret(
            &setup.server_secret,
            [(SERVER_CONFIG_KEY.into(), config)].into(),
        ),
    ];
    println!(
        "# Hookline's NATS keys (only the operator may read {keys}) and the NATS servers' configuration.\n\
         # Apply both, include {conf} of {server} in every NATS server's configuration, and install\n\
         # the chart with nats.identities.keysSecretName={keys}.",
        keys = setup.keys_secret,
        conf = SERVER_CONFIG_KEY,
        server = setup.server_secret,
    );
    for mut manifest in manifests {
        manifest.metadata.namespace = Some(namespace.to_string());
        println!("---\n{}", serde_saphyr::to_string(&manifest)?);
    }
    Ok(0)
}

async fn apply(setup: &Setup) -> anyhow::Result<i32> {
    let client = kube::Client::try_default()
        .await
        .context("cannot reach the Kubernetes API (KUBECONFIG or in-cluster config)")?;
    let namespace = setup
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let keys = KeysSecrets {
        namespace: &namespace,
        keys: &setup.keys_secret,
        make: true,
        server: Some(&setup.server_secret),
    }
    .ensure(&client)
    .await?;
    eprintln!(
        "{namespace}/{keys} holds Hookline's NATS keys (account {account}); {namespace}/{server} \
         the NATS servers' configuration, printed below: include it in every NATS server's \
         configuration, and install the chart with nats.identities.keysSecretName={keys}",
        keys = setup.keys_secret,
        server = setup.server_secret,
        account = keys.account(),
    );
    print!("{}", keys.server_config()?);
    Ok(0)
}
