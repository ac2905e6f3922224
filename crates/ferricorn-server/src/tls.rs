//! TLS with rustls: Gunicorn's `--certfile`, `--keyfile`, `--ca-certs`, `--cert-reqs`,
//! and ALPN for `--http-protocols`. The configuration is built (and every file checked)
//! in the master before any worker starts, so a bad certificate is a start-up error.

use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("Invalid value for {setting}: {path:?}: {why}")]
    File {
        setting: &'static str,
        path: String,
        why: String,
    },
    #[error("Invalid value for cert_reqs: {0} (must be 0, 1 or 2)")]
    CertReqs(i64),
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("Invalid value for ca_certs: {0}")]
    Verifier(String),
}

/// The TLS 1.2 suites `--ciphers` can name (OpenSSL spelling; IANA names work too).
const SUITE_NAMES: &str = "ECDHE-ECDSA-AES256-GCM-SHA384, ECDHE-ECDSA-AES128-GCM-SHA256, ECDHE-ECDSA-CHACHA20-POLY1305, ECDHE-RSA-AES256-GCM-SHA384, ECDHE-RSA-AES128-GCM-SHA256, ECDHE-RSA-CHACHA20-POLY1305";

/// The TLS configuration a worker serves with.
pub type TlsConfig = ServerConfig;

/// ALPN identifiers for `--http-protocols` (`h1,h2`), in the given order.
pub fn alpn_for(http_protocols: &str) -> Result<Vec<Vec<u8>>, String> {
    http_protocols
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p {
            "h1" => Ok(b"http/1.1".to_vec()),
            "h2" => Ok(b"h2".to_vec()),
            other => Err(format!(
                "Invalid value for http_protocols: {other:?} (supported: h1, h2)"
            )),
        })
        .collect()
}

pub struct TlsOptions<'a> {
    pub certfile: &'a str,
    pub keyfile: &'a str,
    pub ca_certs: Option<&'a str>,
    /// 0: no client certificate, 1: optional, 2: required (Python's `ssl.CERT_*`).
    pub cert_reqs: i64,
    /// ALPN protocols in preference order (`h2`, `http/1.1`).
    pub alpn: Vec<Vec<u8>>,
    /// `--ciphers`: TLS 1.2 suites by OpenSSL or IANA name, `:`- or `,`-separated.
    pub ciphers: Option<&'a str>,
}

/// OpenSSL's names for the TLS 1.2 suites rustls implements, with rustls' own names.
const OPENSSL_NAMES: [(&str, &str); 6] = [
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
    ("ECDHE-RSA-AES256-GCM-SHA384", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"),
    ("ECDHE-RSA-AES128-GCM-SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
];

/// The provider's suites restricted by `--ciphers`. As with Python's
/// `SSLContext.set_ciphers`, the list governs TLS 1.2; TLS 1.3 suites are always kept.
/// Terms rustls cannot apply (OpenSSL keywords and expressions such as `HIGH` or
/// `!aNULL`, suites it does not implement such as `AES256-SHA`) are skipped with a
/// warning naming them: Gunicorn starts with such a list, and so must a drop-in. When
/// no term names a suite rustls has, its own suites (all AEAD with forward secrecy,
/// what such lists ask for) stay.
fn restrict_ciphers(provider: &mut rustls::crypto::CryptoProvider, spec: &str) -> Result<(), TlsError> {
    let mut wanted = Vec::new();
    let mut skipped = Vec::new();
    for name in spec.split([':', ',', ' ']).map(str::trim).filter(|n| !n.is_empty()) {
        let rustls_name = OPENSSL_NAMES
            .iter()
            .find(|(o, _)| o.eq_ignore_ascii_case(name))
            .map(|(_, r)| *r)
            .unwrap_or(name);
        match provider
            .cipher_suites
            .iter()
            .find(|s| format!("{:?}", s.suite()).eq_ignore_ascii_case(rustls_name))
        {
            Some(suite) => wanted.push(*suite),
            None => skipped.push(name),
        }
    }
    if !skipped.is_empty() {
        let what = if wanted.is_empty() {
            "rustls' own TLS 1.2 suites are used"
        } else {
            "the suites named that rustls has are used"
        };
        ferricorn_core::warning!(
            "ciphers: {} not applied ({}; rustls offers {}): {what}",
            skipped.join(", "),
            "OpenSSL keywords and suites rustls does not implement",
            SUITE_NAMES
        );
    }
    if wanted.is_empty() {
        return Ok(());
    }
    provider
        .cipher_suites
        .retain(|s| s.version() == &rustls::version::TLS13 || wanted.iter().any(|w| w.suite() == s.suite()));
    Ok(())
}

fn read(setting: &'static str, path: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File {
        setting,
        path: path.into(),
        why: e.to_string(),
    })
}

pub fn server_config(opts: &TlsOptions<'_>) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_pem = read("certfile", opts.certfile)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::File {
            setting: "certfile",
            path: opts.certfile.into(),
            why: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::File {
            setting: "certfile",
            path: opts.certfile.into(),
            why: "no PEM certificate in the file".into(),
        });
    }
    let key_pem = read("keyfile", opts.keyfile)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::File {
        setting: "keyfile",
        path: opts.keyfile.into(),
        why: format!("no usable private key (PKCS#1, PKCS#8 or SEC1 PEM): {e}"),
    })?;
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(spec) = opts.ciphers {
        restrict_ciphers(&mut provider, spec)?;
    }
    let provider = Arc::new(provider);
    let builder = ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = match opts.cert_reqs {
        0 => builder.with_no_client_auth(),
        1 | 2 => {
            let path = opts
                .ca_certs
                .ok_or_else(|| TlsError::Verifier("--cert-reqs 1 or 2 needs --ca-certs".into()))?;
            let pem = read("ca_certs", path)?;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| TlsError::File {
                    setting: "ca_certs",
                    path: path.into(),
                    why: e.to_string(),
                })?;
                roots.add(cert)?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if opts.cert_reqs == 1 {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| TlsError::Verifier(e.to_string()))?)
        }
        other => return Err(TlsError::CertReqs(other)),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| TlsError::File {
        setting: "keyfile",
        path: opts.keyfile.into(),
        why: format!("does not match the certificate in {:?} ({e})", opts.certfile),
    })?;
    config.alpn_protocols = opts.alpn.clone();
    Ok(Arc::new(config))
}
