//! `spec.endpoint.tls`: a private CA trusted beside the public roots, a client certificate for
//! mutual TLS, and the name the endpoint's certificate must hold when it is not the URL's host.
//! Verification can be widened, never switched off.

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;

/// The TLS material of a destination, as read from its Secrets.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TlsSettings {
    /// PEM: CAs trusted in addition to the public roots.
    pub ca_pem: Option<String>,
    /// PEM: the client certificate chain and its private key.
    pub client_pem: Option<(String, String)>,
    pub server_name: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{0}")]
    Ca(String),
    #[error("{0}")]
    ClientCert(String),
    #[error("{0:?} is not a valid DNS name or IP address")]
    ServerName(String),
}

impl TlsError {
    /// The spec field at fault.
    pub fn field(&self) -> &'static str {
        match self {
            TlsError::Ca(_) => "spec.endpoint.tls.caSecretRef",
            TlsError::ClientCert(_) => "spec.endpoint.tls.clientCertSecretRef",
            TlsError::ServerName(_) => "spec.endpoint.tls.serverName",
        }
    }
}

impl TlsSettings {
    /// Checks the material as a TLS client would load it.
    pub fn validate(&self) -> Result<(), TlsError> {
        self.client_config().map(|_| ())
    }

    pub fn client_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(pem) = &self.ca_pem {
            let certs = certificates(pem).map_err(TlsError::Ca)?;
            for cert in certs {
                roots.add(cert).map_err(|e| {
                    TlsError::Ca(format!("a certificate is not usable as a CA: {e}"))
                })?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| TlsError::Ca(e.to_string()))?;
        let verifier: Arc<dyn ServerCertVerifier> = match &self.server_name {
            None => verifier,
            Some(name) => Arc::new(NamedVerifier {
                inner: verifier,
                name: ServerName::try_from(name.clone())
                    .map_err(|_| TlsError::ServerName(name.clone()))?,
            }),
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default versions")
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match &self.client_pem {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = certificates(cert).map_err(TlsError::ClientCert)?;
                let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| {
                    TlsError::ClientCert(format!("tls.key holds no usable private key: {e}"))
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| TlsError::ClientCert(e.to_string()))?
            }
        };
        Ok(config)
    }
}

fn certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate bundle: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into());
    }
    Ok(certs)
}

/// Verifies the endpoint's certificate for `name` instead of the URL's host — the whole usual
/// verification, with another name.
#[derive(Debug)]
struct NamedVerifier {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for NamedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
