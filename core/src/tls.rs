//! Which `https://` servers the app trusts, for its API requests and its
//! socket alike: the system's trusted roots (through
//! rustls-platform-verifier, so a CA the operator added to the system's
//! store counts), plus certificates the user gave the app, for a
//! self-hosted server with a CA of its own.

use std::sync::{Arc, OnceLock};

use rustls::ClientConfig;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls_platform_verifier::Verifier;

use crate::error::{CoreError, CoreResult};

/// Cheap to clone. The TLS settings are made the first time an `https`
/// server is used (reading the system's roots takes a few milliseconds,
/// and a plain `http` server never needs them).
#[derive(Clone, Default)]
pub struct Trust {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    extra_roots: Vec<CertificateDer<'static>>,
    config: OnceLock<Result<Arc<ClientConfig>, String>>,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trust")
            .field("extra_roots", &self.inner.extra_roots.len())
            .finish()
    }
}

impl Trust {
    /// The system's roots and the certificates in `pem` (one or more
    /// `-----BEGIN CERTIFICATE-----` blocks).
    pub fn with_pem(pem: &[u8]) -> CoreResult<Trust> {
        let extra_roots = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| CoreError::Invalid(format!("not a PEM certificate file: {err}")))?;
        if extra_roots.is_empty() {
            return Err(CoreError::Invalid(
                "no certificate in the PEM file (expected -----BEGIN CERTIFICATE-----)".into(),
            ));
        }
        // Checked now, so that a bad file is refused at start, not at the
        // first connection.
        let mut store = rustls::RootCertStore::empty();
        for cert in &extra_roots {
            store
                .add(cert.clone())
                .map_err(|err| CoreError::Invalid(format!("not a usable CA certificate: {err}")))?;
        }
        Ok(Trust {
            inner: Arc::new(Inner {
                extra_roots,
                config: OnceLock::new(),
            }),
        })
    }

    /// The settings both reqwest and the socket use.
    pub(crate) fn client_config(&self) -> CoreResult<Arc<ClientConfig>> {
        self.inner
            .config
            .get_or_init(|| make_config(&self.inner.extra_roots).map_err(|err| err.to_string()))
            .clone()
            .map_err(|err| CoreError::Invalid(format!("cannot set up TLS: {err}")))
    }
}

fn make_config(
    extra_roots: &[CertificateDer<'static>],
) -> Result<Arc<ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Verifier::new_with_extra_roots(extra_roots.iter().cloned(), provider.clone())?;
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_a_certificate_is_refused_with_a_reason() {
        let err = Trust::with_pem(b"hello").expect_err("no certificate");
        assert!(err.to_string().contains("no certificate"), "{err}");
        let err = Trust::with_pem(b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n")
            .expect_err("broken");
        assert!(err.to_string().contains("PEM"), "{err}");
        // Base64 that decodes, but to no certificate.
        let err =
            Trust::with_pem(b"-----BEGIN CERTIFICATE-----\nAAECAwQF\n-----END CERTIFICATE-----\n")
                .expect_err("not a certificate");
        assert!(err.to_string().contains("CA certificate"), "{err}");
    }
}
