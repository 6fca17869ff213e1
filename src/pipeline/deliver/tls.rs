//! `spec.endpoint.tls`: a private CA trusted beside the public roots, a client certificate for
//! mutual TLS, and the name the endpoint's certificate must hold when it is not the URL's host.
//! Verification can be widened, never switched off.

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
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
        let client_key = self
            .client_pem
            .as_ref()
            .map(|(cert, key)| client_key(cert, key, &provider))
            .transpose()?;
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
        Ok(match client_key {
            None => builder.with_no_client_auth(),
            Some(key) => builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(key))),
        })
    }
}

/// The client certificate and its key, as sent. A certificate Hookline's X.509 parser does not
/// take — an X.509 v1 one, as `openssl x509 -req` makes without an extensions file — is sent
/// as it is: the endpoint, not Hookline, decides whether it trusts it. Only a key that is not
/// the certificate's is refused here.
fn client_key(cert: &str, key: &str, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let chain = certificates(cert).map_err(TlsError::ClientCert)?;
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
        .map_err(|e| TlsError::ClientCert(format!("tls.key holds no usable private key: {e}")))?;
    let key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::ClientCert(format!("tls.key holds no usable private key: {e}")))?;
    let mismatch = || {
        TlsError::ClientCert("tls.key is not the private key of the certificate in tls.crt".into())
    };
    let certified = CertifiedKey::new(chain, key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => return Err(mismatch()),
        // Not parsed (a v1 certificate): its key is compared as the certificate holds it.
        Err(_) => {
            let spki = certified
                .cert
                .first()
                .and_then(|c| subject_public_key_info(c));
            if let (Some(spki), Some(key)) = (spki, certified.key.public_key())
                && spki != key.as_ref()
            {
                return Err(mismatch());
            }
        }
    }
    Ok(certified)
}

/// The SubjectPublicKeyInfo of a DER certificate, found by walking its structure (any X.509
/// version): tbsCertificate's optional `[0]` version, then serial number, signature algorithm,
/// issuer, validity and subject come before it.
fn subject_public_key_info(cert: &[u8]) -> Option<&[u8]> {
    let (_, cert, _) = der_element(cert)?;
    let (_, mut tbs, _) = der_element(cert)?;
    if tbs.first() == Some(&0xA0) {
        tbs = der_element(tbs)?.2;
    }
    for _ in 0..5 {
        tbs = der_element(tbs)?.2;
    }
    let (_, _, rest) = der_element(tbs)?;
    Some(&tbs[..tbs.len() - rest.len()])
}

/// One DER element at the start of `input`: its tag, its content, and what follows it.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |l, b| (l << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_key_is_found_in_a_certificate_of_any_version() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let spki = rustls::pki_types::SubjectPublicKeyInfoDer::from_pem_slice(
            key.public_key_pem().as_bytes(),
        )
        .unwrap();
        assert_eq!(subject_public_key_info(cert.der()), Some(spki.as_ref()));
        assert_eq!(subject_public_key_info(&cert.der()[..40]), None);
        assert_eq!(subject_public_key_info(&[0x30, 0x85, 1, 2, 3, 4, 5]), None);
    }
}
