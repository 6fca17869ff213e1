//! `spec.endpoint.tls` against real HTTPS endpoints on 127.0.0.1 with certificates made in the
//! test: a private CA, mutual TLS, another server name, and rotations picked up live.

mod support;

use std::path::Path;
use support::tls::{Ca, TlsEndpoint, server_config, server_config_taking_any_client};
use support::*;

/// A destination sending to `url` with `tls` (YAML lines under `tls:`), and its Secrets.
fn files(
    dir: &Path,
    url: &str,
    tls: &str,
    secrets: &[(&str, &[(&str, &str)])],
) -> Vec<std::path::PathBuf> {
    let dest = destination("crm", url, "").replace("    url:", &format!("    tls:\n{tls}    url:"));
    let mut out = vec![manifest(dir, "d.yaml", &dest)];
    for (i, (name, data)) in secrets.iter().enumerate() {
        let mut yaml =
            format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\nstringData:\n");
        for (k, v) in *data {
            yaml.push_str(&format!("  {k}: |\n"));
            for line in v.lines() {
                yaml.push_str(&format!("    {line}\n"));
            }
        }
        out.push(manifest(dir, &format!("s{i}.yaml"), &yaml));
    }
    out
}

/// `hookline test -f …`: its exit status and what it printed.
fn test_once(files: &[std::path::PathBuf], dir: &Path) -> (bool, String) {
    let mut args = vec![
        "test".to_string(),
        "--timeout".into(),
        "10".into(),
        "--data-dir".into(),
        dir.join("data").display().to_string(),
    ];
    for f in files {
        args.push("-f".into());
        args.push(f.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    outcome(&run_cli(&args))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_ca_is_trusted_with_ca_secret_ref_and_refused_without() {
    let ca = Ca::new("private root");
    let endpoint = TlsEndpoint::start(server_config(&ca.issue(&["127.0.0.1"]), None)).await;
    let dir = tempfile::tempdir().unwrap();
    let trusting = files(
        dir.path(),
        &endpoint.url,
        "      caSecretRef: { name: crm-ca, key: ca.crt }\n",
        &[("crm-ca", &[("ca.crt", &ca.pem())])],
    );
    let (ok, text) = test_once(&trusting, dir.path());
    assert!(ok, "{text}");
    assert_eq!(endpoint.served(), 1);

    let plain = tempfile::tempdir().unwrap();
    let (ok, text) = test_once(
        &files(
            plain.path(),
            &endpoint.url,
            "      serverName: 127.0.0.1\n",
            &[],
        ),
        plain.path(),
    );
    assert!(!ok, "an unknown CA was trusted: {text}");
    assert!(text.to_lowercase().contains("certificate"), "{text}");
    assert_eq!(endpoint.served(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mtls_endpoint_accepts_only_the_client_certificate_given() {
    let (servers, clients, strangers) =
        (Ca::new("servers"), Ca::new("clients"), Ca::new("strangers"));
    let endpoint = TlsEndpoint::start(server_config(
        &servers.issue(&["127.0.0.1"]),
        Some(&clients),
    ))
    .await;
    let attempt = |client: Option<support::tls::Issued>| {
        let dir = tempfile::tempdir().unwrap();
        let mut secrets: Vec<(&str, Vec<(&str, String)>)> =
            vec![("ca", vec![("ca.crt", servers.pem())])];
        let mut tls = "      caSecretRef: { name: ca, key: ca.crt }\n".to_string();
        if let Some(c) = &client {
            secrets.push((
                "client-tls",
                vec![("tls.crt", c.cert.clone()), ("tls.key", c.key.clone())],
            ));
            tls.push_str("      clientCertSecretRef: { name: client-tls }\n");
        }
        let borrowed: Vec<(&str, Vec<(&str, &str)>)> = secrets
            .iter()
            .map(|(n, d)| (*n, d.iter().map(|(k, v)| (*k, v.as_str())).collect()))
            .collect();
        let refs: Vec<(&str, &[(&str, &str)])> =
            borrowed.iter().map(|(n, d)| (*n, d.as_slice())).collect();
        let f = files(dir.path(), &endpoint.url, &tls, &refs);
        test_once(&f, dir.path())
    };
    let (ok, text) = attempt(Some(clients.issue(&["hookline"])));
    assert!(ok, "{text}");
    let (ok, text) = attempt(None);
    assert!(!ok, "accepted without a client certificate: {text}");
    let (ok, text) = attempt(Some(strangers.issue(&["hookline"])));
    assert!(!ok, "accepted a certificate from another CA: {text}");
    assert_eq!(endpoint.served(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_name_checks_the_certificate_for_another_name() {
    let ca = Ca::new("internal");
    let endpoint = TlsEndpoint::start(server_config(&ca.issue(&["api.internal"]), None)).await;
    let secrets: &[(&str, &[(&str, &str)])] = &[("ca", &[("ca.crt", &ca.pem())])];
    let dir = tempfile::tempdir().unwrap();
    let named = files(
        dir.path(),
        &endpoint.url,
        "      caSecretRef: { name: ca, key: ca.crt }\n      serverName: api.internal\n",
        secrets,
    );
    let (ok, text) = test_once(&named, dir.path());
    assert!(ok, "{text}");
    let other = tempfile::tempdir().unwrap();
    let by_host = files(
        other.path(),
        &endpoint.url,
        "      caSecretRef: { name: ca, key: ca.crt }\n",
        secrets,
    );
    let (ok, text) = test_once(&by_host, other.path());
    assert!(
        !ok,
        "a certificate for api.internal passed for 127.0.0.1: {text}"
    );
}

#[tokio::test]
async fn bad_tls_material_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let f = files(
        dir.path(),
        "https://127.0.0.1:9/in",
        "      caSecretRef: { name: ca, key: ca.crt }\n",
        &[("ca", &[("ca.crt", "not a certificate")])],
    );
    let (ok, text) = test_once(&f, dir.path());
    assert!(!ok);
    assert!(text.contains("spec.endpoint.tls.caSecretRef"), "{text}");
}

/// A client certificate made as many tutorials make one (`openssl x509 -req` without an
/// extensions file: X.509 v1) is sent as it is; the endpoint decides whether it trusts it.
/// A key that is not the certificate's is refused naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_x509_v1_client_certificate_is_sent_and_a_mismatched_key_refused() {
    let fixture = |f: &str| {
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/x509-v1")
                .join(f),
        )
        .unwrap()
    };
    let (cert, key) = (fixture("client.crt"), fixture("client.key"));
    let servers = Ca::new("servers");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let endpoint = TlsEndpoint::start(server_config_taking_any_client(
        &servers.issue(&["127.0.0.1"]),
        seen.clone(),
    ))
    .await;
    let send = |key: &str| {
        let dir = tempfile::tempdir().unwrap();
        let f = files(
            dir.path(),
            &endpoint.url,
            "      caSecretRef: { name: ca, key: ca.crt }\n      clientCertSecretRef: { name: client-tls }\n",
            &[
                ("ca", &[("ca.crt", servers.pem().as_str())]),
                (
                    "client-tls",
                    &[("tls.crt", cert.as_str()), ("tls.key", key)],
                ),
            ],
        );
        test_once(&f, dir.path())
    };
    let (ok, text) = send(&key);
    assert!(ok, "{text}");
    let presented = seen.lock().unwrap().clone();
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let v1 =
        tokio_rustls::rustls::pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
    assert_eq!(
        presented,
        [v1.to_vec()],
        "the v1 certificate went out as it is"
    );

    let other = Ca::new("other").issue(&["hookline"]).key;
    let (ok, text) = send(&other);
    assert!(!ok);
    assert!(
        text.contains("spec.endpoint.tls.clientCertSecretRef")
            && text.contains("not the private key of the certificate"),
        "{text}"
    );
}
