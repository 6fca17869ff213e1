//! `hookline connect`: a person authorizes an AuthorizationCode destination once; the refresh
//! token is stored where the destination's token lifecycle picks it up — the data dir for
//! `hookline run` (`-f`), the `<name>-oauth-token` Secret in the cluster (`NAME -n NS`).

use super::{DestinationTarget, Target};
use crate::api::{GrantType, WebhookDestination};
use crate::config::destination::{Destination, OAuth};
use crate::config::manifests::{LoadedDestination, Manifests};
use crate::controller::token_secret;
use crate::egress::Egress;
use crate::egress::policy::EgressPolicy;
use crate::oauth::TokenSet;
use crate::oauth::consent::consent;
use crate::oauth::endpoint::TokenEndpoint;
use crate::oauth::store::{TokenFile, rfc3339};
use anyhow::{Context, bail};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    target: DestinationTarget,
    /// The data dir of `hookline run`, where its tokens are kept
    #[arg(long, default_value = "./.hookline")]
    data_dir: PathBuf,
    /// Print the authorize URL instead of opening a browser
    #[arg(long)]
    no_browser: bool,
    /// Port of the loopback redirect http://127.0.0.1:PORT/callback (default: any free port)
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// How long to wait for the person to authorize, in seconds
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

pub async fn connect(args: Args) -> anyhow::Result<i32> {
    match args.target.target().await? {
        Target::Files(files) => connect_local(&args, files).await,
        Target::Cluster {
            api,
            namespace,
            name,
        } => connect_in_cluster(&args, *api, &namespace, name).await,
    }
}

async fn connect_local(args: &Args, files: &[PathBuf]) -> anyhow::Result<i32> {
    let manifests = Manifests::load(files)?;
    let mut connected = 0;
    for loaded in &manifests.destinations {
        if !is_authorization_code(&loaded.resource) {
            continue;
        }
        let dest = Destination::resolve(loaded, &manifests.secrets)?;
        let oauth = dest.oauth.as_ref().expect("an OAuth2 destination");
        let tokens = authorize(args, &dest.name, oauth).await?;
        let file = TokenFile::new(&args.data_dir, &dest.namespace, &dest.name, None);
        let _lock = file.lock().await?;
        file.save(&tokens)?;
        println!(
            "{}: connected; tokens stored in {} (access token expires {})",
            dest.name,
            file.path().display(),
            rfc3339(tokens.expires_at)
        );
        connected += 1;
    }
    if connected == 0 {
        bail!(
            "{}: no WebhookDestination with spec.auth.oauth2.grantType AuthorizationCode",
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(0)
}

async fn connect_in_cluster(
    args: &Args,
    api: kube::Api<WebhookDestination>,
    namespace: &str,
    name: &str,
) -> anyhow::Result<i32> {
    let resource = api
        .get_opt(name)
        .await
        .with_context(|| format!("cannot read WebhookDestination {namespace}/{name}"))?
        .with_context(|| format!("WebhookDestination {namespace}/{name} not found"))?;
    if !is_authorization_code(&resource) {
        bail!(
            "WebhookDestination {namespace}/{name}: spec.auth.oauth2.grantType is not AuthorizationCode; nothing to connect"
        );
    }
    let client = api.clone().into_client();
    let secrets = token_secret::read_referenced(&client, namespace, &resource).await?;
    let loaded = LoadedDestination::from_resource(resource.clone());
    let dest = Destination::resolve(&loaded, &secrets)?;
    let oauth = dest.oauth.as_ref().expect("an OAuth2 destination");
    let tokens = authorize(args, name, oauth).await?;
    token_secret::save(&client, &resource, &tokens)
        .await
        .with_context(|| format!("cannot store the tokens of {namespace}/{name}"))?;
    println!(
        "{namespace}/{name}: connected; tokens stored in Secret {}; the operator keeps them fresh",
        crate::config::destination::token_secret_name(name)
    );
    Ok(0)
}

fn is_authorization_code(d: &WebhookDestination) -> bool {
    d.spec
        .auth
        .as_ref()
        .and_then(|a| a.oauth2.as_ref())
        .is_some_and(|o| o.grant_type == GrantType::AuthorizationCode)
}

async fn authorize(args: &Args, name: &str, oauth: &OAuth) -> anyhow::Result<TokenSet> {
    // A person on their own machine: their network, no guard.
    let endpoint = TokenEndpoint::new(
        oauth.settings.clone(),
        &Egress::new(EgressPolicy::laptop(false, Vec::new()), None)?,
    )?;
    let no_browser = args.no_browser;
    let tokens = consent(
        &endpoint,
        args.port,
        Duration::from_secs(args.timeout),
        |url| {
            eprintln!("{name}: authorize Hookline at this URL (waiting for the redirect):");
            println!("{url}");
            if !no_browser {
                open_browser(url.as_str());
            }
        },
    )
    .await
    .with_context(|| format!("{name}: authorization failed"))?;
    if tokens.refresh_token.is_none() {
        eprintln!(
            "{name}: warning: the server issued no refresh token; add offline_access (or the server's equivalent) to spec.auth.oauth2.scopes, or connect again when the access token expires"
        );
    }
    Ok(tokens)
}

fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    if std::process::Command::new(opener)
        .arg(url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .is_err()
    {
        eprintln!("(could not start {opener}; open the URL yourself)");
    }
}
