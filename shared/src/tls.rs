//! TLS to Postgres and Redis through rustls, on the aws-lc-rs provider the AWS SDK already brings
//! (no OpenSSL to build).
//!
//! Postgres follows libpq: the URL's `sslmode` (`disable`, `prefer`, `require`, `verify-ca`,
//! `verify-full`) and `sslrootcert` (a PEM file of trusted CAs, e.g. the RDS global bundle, or
//! `system` for the operating system's roots). tokio-postgres knows only the first three modes and
//! no `sslrootcert`, so both are taken out of the URL here and enforced by the rustls verifier:
//! `require` encrypts without checking the certificate (as libpq does without a root file),
//! `verify-ca` checks the chain, `verify-full` the chain and the host name of the URL.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// How a Postgres connection uses TLS: libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// TLS when the server offers it, unverified; plain otherwise. libpq's default.
    Prefer,
    /// TLS or no connection; the certificate is not checked.
    Require,
    /// TLS, with a certificate signed by a trusted CA (any host name).
    VerifyCa,
    /// TLS, with a certificate signed by a trusted CA and issued for the host connected to.
    VerifyFull,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

impl std::str::FromStr for SslMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(format!(
                    "sslmode {other:?} is not one of disable, prefer, require, verify-ca, verify-full"
                ));
            }
        })
    }
}

/// Where trusted CA certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCerts {
    /// The operating system's store (what `sslrootcert=system` asks for, and the default).
    System,
    /// A PEM file of one or more CA certificates.
    File(PathBuf),
}

impl RootCerts {
    fn parse(value: &str) -> RootCerts {
        if value == "system" {
            RootCerts::System
        } else {
            RootCerts::File(PathBuf::from(value))
        }
    }

    /// The certificates, as a rustls root store. An unreadable or empty file is an error naming it.
    pub fn load(&self) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        match self {
            RootCerts::System => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(TlsError::NoSystemRoots);
                }
            }
            RootCerts::File(path) => {
                let bad = |problem: String| TlsError::RootCert {
                    path: path.clone(),
                    problem,
                };
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| bad(e.to_string()))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| bad(e.to_string()))?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(bad("holds no usable CA certificate".into()));
                }
            }
        }
        Ok(roots)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{0}")]
    Url(String),
    #[error("CA file {path:?}: {problem}")]
    RootCert { path: PathBuf, problem: String },
    #[error("no CA certificates found in the system store")]
    NoSystemRoots,
    #[error("TLS setup")]
    Rustls(#[from] rustls::Error),
}

/// A Postgres URL split into what tokio-postgres parses and how TLS is to be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTarget {
    /// The URL without `sslmode` and `sslrootcert`.
    pub url: String,
    /// `None` when the URL did not say (tokio-postgres's own parse then decides, `prefer` by default).
    pub mode: Option<SslMode>,
    pub root_certs: RootCerts,
}

/// Takes `sslmode` and `sslrootcert` out of a `postgres://` URL's query. A URL in key/value form (`host=... dbname=...`) is left to
/// tokio-postgres, which knows `sslmode` up to `require`.
pub fn split_pg_url(url: &str) -> Result<PgTarget, TlsError> {
    let mut mode = None;
    let mut root_certs = RootCerts::System;
    let Some((base, query)) = url.split_once('?').filter(|_| url.contains("://")) else {
        return Ok(PgTarget {
            url: url.to_owned(),
            mode: None,
            root_certs,
        });
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => mode = Some(percent_decode(value)?.parse().map_err(TlsError::Url)?),
            "sslrootcert" => root_certs = RootCerts::parse(&percent_decode(value)?),
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok(PgTarget { url, mode, root_certs })
}

/// `url` with `sslmode` and `sslrootcert` added where its query does not set them: how
/// `PGSSLMODE` and `PGSSLROOTCERT` reach a URL built from a Secrets Manager secret. A URL in
/// key/value form is returned as it is.
pub fn with_pg_defaults(url: &str, mode: Option<SslMode>, root_cert: Option<&str>) -> String {
    if !url.contains("://") {
        return url.to_owned();
    }
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    let has = |key: &str| query.split('&').any(|p| p.split('=').next() == Some(key));
    let mut added = Vec::new();
    if let Some(mode) = mode
        && !has("sslmode")
    {
        added.push(format!("sslmode={}", mode.as_str()));
    }
    if let Some(root) = root_cert
        && !has("sslrootcert")
    {
        added.push(format!("sslrootcert={}", percent_encode(root)));
    }
    if added.is_empty() {
        return url.to_owned();
    }
    let joiner = if url.contains('?') { "&" } else { "?" };
    format!("{url}{joiner}{}", added.join("&"))
}

fn percent_encode(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn percent_decode(raw: &str) -> Result<String, TlsError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = raw
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| TlsError::Url(format!("bad percent-encoding in {raw:?}")))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| TlsError::Url(format!("{raw:?} is not UTF-8 once decoded")))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Makes aws-lc-rs the process's rustls provider, for libraries (the redis crate) that build their
/// rustls configuration from the process default. Harmless when one is already installed.
pub fn install_default_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The rustls client configuration for HTTPS requests (the `http` job): the system's roots, and
/// HTTP/1.1, the only protocol its client speaks, offered by ALPN.
pub fn https_client_config() -> Result<ClientConfig, TlsError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(RootCerts::System.load()?)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The rustls client configuration for a Postgres connection in `mode`.
pub fn pg_client_config(mode: SslMode, root_certs: &RootCerts) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let verifier: Arc<dyn ServerCertVerifier> = match mode {
        SslMode::Disable | SslMode::Prefer | SslMode::Require => Arc::new(NoCertCheck(provider)),
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let chain = WebPkiServerVerifier::builder_with_provider(Arc::new(root_certs.load()?), provider)
                .build()
                .map_err(|e| TlsError::Url(format!("CA certificates: {e}")))?;
            if mode == SslMode::VerifyFull {
                chain
            } else {
                Arc::new(AnyHostName(chain))
            }
        }
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// `require`/`prefer`: encryption without authentication, as libpq does them. The handshake's
/// signatures are still checked against the certificate the server sent.
#[derive(Debug)]
struct NoCertCheck(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCertCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the full chain check, except that the certificate may name another host.
#[derive(Debug)]
struct AnyHostName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            // webpki checks the name last, so this error means everything else held.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Reads a PEM CA file for Redis (`REDIS_CA_FILE`), checking that it holds a certificate.
pub fn read_ca_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    RootCerts::File(path.to_owned()).load()?;
    std::fs::read(path).map_err(|e| TlsError::RootCert {
        path: path.to_owned(),
        problem: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssl_parameters_leave_the_url_and_the_rest_stays() {
        let t = split_pg_url(
            "postgres://u:p@db:5432/jobq?application_name=x&sslmode=verify-full&sslrootcert=%2Fopt%2Frds.pem",
        )
        .expect("valid");
        assert_eq!(t.url, "postgres://u:p@db:5432/jobq?application_name=x");
        assert_eq!(t.mode, Some(SslMode::VerifyFull));
        assert_eq!(t.root_certs, RootCerts::File("/opt/rds.pem".into()));
        let t = split_pg_url("postgres://u@db/jobq?sslmode=verify-ca&sslrootcert=system").expect("valid");
        assert_eq!(
            (t.url.as_str(), t.mode),
            ("postgres://u@db/jobq", Some(SslMode::VerifyCa))
        );
        assert_eq!(t.root_certs, RootCerts::System);
    }

    #[test]
    fn without_sslmode_the_url_is_unchanged() {
        let t = split_pg_url("postgres://u@db/jobq").expect("valid");
        assert_eq!(t.mode, None);
        assert_eq!(t.url, "postgres://u@db/jobq");
    }

    #[test]
    fn defaults_fill_only_what_the_url_leaves_open() {
        let url = with_pg_defaults("postgres://u@db/jobq", Some(SslMode::VerifyFull), Some("/opt/a b.pem"));
        assert_eq!(
            url,
            "postgres://u@db/jobq?sslmode=verify-full&sslrootcert=/opt/a%20b.pem"
        );
        let t = split_pg_url(&url).expect("valid");
        assert_eq!(t.root_certs, RootCerts::File("/opt/a b.pem".into()));
        let url = with_pg_defaults("postgres://u@db/jobq?sslmode=disable", Some(SslMode::VerifyFull), None);
        assert_eq!(url, "postgres://u@db/jobq?sslmode=disable");
    }

    #[test]
    fn an_unknown_sslmode_is_refused_with_the_modes_named() {
        let err = split_pg_url("postgres://u@db/jobq?sslmode=verify").expect_err("bad mode");
        assert!(err.to_string().contains("verify-full"), "{err}");
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let err =
            pg_client_config(SslMode::VerifyFull, &RootCerts::File("/nonexistent/ca.pem".into())).expect_err("no file");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
