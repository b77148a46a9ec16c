//! The system's trusted TLS roots, read once per process.
//!
//! Every reqwest client built with its default TLS settings reads and parses the system's
//! certificate store (`/etc/ssl/certs`: about 30 ms on a loaded node). A lazy start makes a
//! registry client for each range request it sends before the container starts (see
//! `lazy::ranges`), and both rsing and its image server fill a pool of them, each with two
//! reqwest clients: one start read the store 39 times. Handing our clients the roots read here
//! once gives them the same trust (on Linux reqwest's platform verifier checks against exactly
//! this store, `SSL_CERT_FILE` and `SSL_CERT_DIR` included) without the reads: 15 are left,
//! from a default client `oci_client::Client::try_from` builds and drops.

use std::sync::OnceLock;

/// The store's certificates (DER), or none when it could not be read: then callers keep
/// reqwest's default, which reads the store itself and reports what is wrong with it.
fn der() -> &'static [Vec<u8>] {
    static ROOTS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        if !found.errors.is_empty() {
            tracing::debug!(errors = ?found.errors, "reading the system's TLS roots");
        }
        found.certs.into_iter().map(|c| c.to_vec()).collect()
    })
}

/// `builder` trusting the system's roots, read once per process.
pub fn reqwest_builder(builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
    let roots: Vec<reqwest::Certificate> = der()
        .iter()
        .filter_map(|d| reqwest::Certificate::from_der(d).ok())
        .collect();
    if roots.is_empty() {
        builder
    } else {
        builder.tls_certs_only(roots)
    }
}

/// The same roots for an `oci_client` client's configuration (`tls_certs_only`; empty: its default).
pub fn oci_client() -> Vec<oci_client::client::Certificate> {
    der()
        .iter()
        .map(|d| oci_client::client::Certificate {
            encoding: oci_client::client::CertificateEncoding::Der,
            data: d.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_build_with_the_roots_read_once() {
        // As `Registry` does: reqwest is built without a default TLS provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let first = der().as_ptr();
        assert_eq!(der().as_ptr(), first, "the store is read once");
        assert_eq!(oci_client().len(), der().len());
        reqwest_builder(reqwest::Client::builder())
            .build()
            .expect("a client with the system's roots");
        oci_client::Client::try_from(oci_client::client::ClientConfig {
            tls_certs_only: oci_client(),
            ..Default::default()
        })
        .expect("an OCI client with the system's roots");
    }
}
