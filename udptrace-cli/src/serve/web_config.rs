//! The web configuration file Prometheus exporters share (the exporter
//! toolkit's `--web.config.file`): TLS, with client certificates if asked,
//! and basic auth against bcrypt hashes. Read once, at start: a file that
//! cannot serve is one line and exit 1 before anything is attached.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebConfigFile {
    tls_server_config: Option<TlsServerConfig>,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsServerConfig {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    /// The certificate and key inline, as PEM, instead of their files.
    cert: Option<String>,
    key: Option<String>,
    client_ca_file: Option<PathBuf>,
    client_auth_type: Option<String>,
    min_version: Option<String>,
    max_version: Option<String>,
}

/// What the file asks for.
pub struct WebConfig {
    pub tls: Option<Arc<ServerConfig>>,
    pub auth: Option<Arc<BasicAuth>>,
}

/// Reads and checks the file: every error names the file and what is wrong.
pub fn load(path: &Path) -> Result<WebConfig, String> {
    let fail = |why: String| format!("web config file {}: {why}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let file: WebConfigFile = if text.trim().is_empty() {
        WebConfigFile::default()
    } else {
        serde_yaml::from_str(&text).map_err(|e| fail(e.to_string()))?
    };
    let tls = match file.tls_server_config {
        Some(mut tls) => {
            // As exporter-toolkit resolves them: from the file's directory.
            let dir = path.parent().unwrap_or(Path::new("."));
            for file in [
                &mut tls.cert_file,
                &mut tls.key_file,
                &mut tls.client_ca_file,
            ]
            .into_iter()
            .flatten()
            {
                *file = dir.join(&*file);
            }
            Some(Arc::new(server_config(&tls).map_err(fail)?))
        }
        None => None,
    };
    let auth = if file.basic_auth_users.is_empty() {
        None
    } else {
        Some(Arc::new(
            BasicAuth::new(file.basic_auth_users).map_err(fail)?,
        ))
    };
    Ok(WebConfig { tls, auth })
}

fn server_config(c: &TlsServerConfig) -> Result<ServerConfig, String> {
    let certs: Vec<CertificateDer<'static>> = match (&c.cert_file, &c.cert) {
        (Some(file), None) => CertificateDer::pem_file_iter(file)
            .and_then(|certs| certs.collect())
            .map_err(|e| format!("cert_file {}: {e}", file.display()))?,
        (None, Some(pem)) => CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("cert: {e}"))?,
        (Some(_), Some(_)) => return Err("both cert and cert_file are set".into()),
        (None, None) => return Err("tls_server_config has no cert_file".into()),
    };
    if certs.is_empty() {
        return Err("the certificate holds no PEM CERTIFICATE block".into());
    }
    let key = match (&c.key_file, &c.key) {
        (Some(file), None) => PrivateKeyDer::from_pem_file(file)
            .map_err(|e| format!("key_file {}: {e}", file.display()))?,
        (None, Some(pem)) => {
            PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| format!("key: {e}"))?
        }
        (Some(_), Some(_)) => return Err("both key and key_file are set".into()),
        (None, None) => return Err("tls_server_config has no key_file".into()),
    };
    // ring, which the QUIC decoder uses already, rather than aws-lc and its
    // C build: no post-quantum key exchange (rustls marks it so), X25519 and
    // the NIST curves, as Prometheus offers them.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions(c)?)
        .map_err(|e| e.to_string())?;
    let builder = match client_verifier(c, provider)? {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("the certificate and key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// TLS 1.2 and 1.3 unless min_version or max_version narrow them (older
/// versions are never spoken: a minimum below 1.2 allows both).
fn versions(c: &TlsServerConfig) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, String> {
    let rank = |field: &str, v: &Option<String>, default: u8| -> Result<u8, String> {
        match v.as_deref() {
            None => Ok(default),
            Some("TLS10") => Ok(10),
            Some("TLS11") => Ok(11),
            Some("TLS12") => Ok(12),
            Some("TLS13") => Ok(13),
            Some(other) => Err(format!(
                "{field} '{}' is not TLS10, TLS11, TLS12 or TLS13",
                other.escape_debug()
            )),
        }
    };
    let (min, max) = (
        rank("min_version", &c.min_version, 12)?,
        rank("max_version", &c.max_version, 13)?,
    );
    let versions: Vec<_> = [(12, &rustls::version::TLS12), (13, &rustls::version::TLS13)]
        .into_iter()
        .filter(|(v, _)| (min..=max).contains(v))
        .map(|(_, version)| version)
        .collect();
    if versions.is_empty() {
        return Err("min_version and max_version leave neither TLS 1.2 nor TLS 1.3".into());
    }
    Ok(versions)
}

/// The client certificate policy: exporter-toolkit's names, for the
/// policies that verify what is presented.
fn client_verifier(
    c: &TlsServerConfig,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>, String> {
    let required = match c.client_auth_type.as_deref().unwrap_or("NoClientCert") {
        "NoClientCert" => {
            if c.client_ca_file.is_some() {
                return Err("client_ca_file is set, but client_auth_type is not \
                     RequireAndVerifyClientCert or VerifyClientCertIfGiven"
                    .into());
            }
            return Ok(None);
        }
        "RequireAndVerifyClientCert" => true,
        "VerifyClientCertIfGiven" => false,
        other => {
            return Err(format!(
                "client_auth_type '{}' is not supported (NoClientCert, \
                 VerifyClientCertIfGiven or RequireAndVerifyClientCert: client \
                 certificates are verified or not asked for)",
                other.escape_debug()
            ))
        }
    };
    let Some(file) = &c.client_ca_file else {
        return Err("client_auth_type verifies client certificates: set client_ca_file".into());
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("client_ca_file {}: {e}", file.display()))?
    {
        roots
            .add(cert)
            .map_err(|e| format!("client_ca_file {}: {e}", file.display()))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "client_ca_file {} holds no certificate",
            file.display()
        ));
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let builder = if required {
        builder
    } else {
        builder.allow_unauthenticated()
    };
    builder.build().map(Some).map_err(|e| e.to_string())
}

/// Users and their bcrypt hashes. A bcrypt check costs tens of
/// milliseconds by design: a pair once checked is remembered (as
/// exporter-toolkit does), so that scrapes do not pay it each time.
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    checked: Mutex<HashSet<(String, String)>>,
}

/// Pairs remembered at most; a client trying many passwords finds them forgotten.
const REMEMBERED: usize = 64;

impl BasicAuth {
    fn new(users: BTreeMap<String, String>) -> Result<Self, String> {
        for (user, hash) in &users {
            if hash.parse::<bcrypt::HashParts>().is_err() {
                return Err(format!(
                    "basic_auth_users: the password of '{}' is not a bcrypt hash",
                    user.escape_debug()
                ));
            }
        }
        Ok(BasicAuth {
            users,
            checked: Mutex::new(HashSet::new()),
        })
    }

    /// Whether an `Authorization` header's value is a pair already checked:
    /// no bcrypt check needed.
    pub fn remembers(&self, authorization: Option<&[u8]>) -> bool {
        let Some(pair) = authorization.and_then(basic_credentials) else {
            return false;
        };
        let checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
        checked.contains(&pair)
    }

    /// Whether an `Authorization` header's value names a user and their
    /// password. Blocks for the bcrypt check.
    pub fn allows(&self, authorization: Option<&[u8]>) -> bool {
        let Some((user, password)) = authorization.and_then(basic_credentials) else {
            return false;
        };
        let pair = (user, password);
        let mut checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
        if checked.contains(&pair) {
            return true;
        }
        drop(checked);
        // An unknown user is checked against a known one's hash: as slow.
        let known = self.users.get(&pair.0);
        let hash = known.or_else(|| self.users.values().next());
        let matches =
            hash.is_some_and(|h| bcrypt::verify(&pair.1, h).unwrap_or(false)) && known.is_some();
        if matches {
            checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
            if checked.len() >= REMEMBERED {
                checked.clear();
            }
            checked.insert(pair);
        }
        matches
    }
}

/// The user and password of `Basic <base64 of user:password>`.
fn basic_credentials(value: &[u8]) -> Option<(String, String)> {
    let value = std::str::from_utf8(value).ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let (user, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "udptrace-web-config-{}-{name}.yml",
            std::process::id()
        ));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn basic_auth_checks_bcrypt_hashes() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let path = write("auth", &format!("basic_auth_users:\n  alice: {hash}\n"));
        let auth = load(&path).unwrap().auth.unwrap();
        let header = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        assert!(auth.allows(Some(header("alice:s3cret").as_bytes())));
        assert!(auth.allows(Some(header("alice:s3cret").as_bytes())));
        assert!(!auth.allows(Some(header("alice:wrong").as_bytes())));
        assert!(!auth.allows(Some(header("bob:s3cret").as_bytes())));
        assert!(!auth.allows(Some(b"Bearer abc")));
        assert!(!auth.allows(None));
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let cases = [
            (
                "basic_auth_users:\n  alice: plain\n",
                "is not a bcrypt hash",
            ),
            (
                "tls_server_config:\n  key_file: k.pem\n",
                "has no cert_file",
            ),
            ("tls_server_conf: {}\n", "unknown field `tls_server_conf`"),
            (
                "tls_server_config:\n  cert_file: /nonexistent.pem\n  key_file: k\n",
                "cert_file /nonexistent.pem",
            ),
        ];
        for (i, (text, want)) in cases.into_iter().enumerate() {
            let path = write(&format!("bad{i}"), text);
            let err = load(&path).err().unwrap();
            assert!(err.contains(want), "{text:?}: {err}");
            assert!(!err.contains('\n'), "{err}");
            std::fs::remove_file(path).unwrap();
        }
    }

    #[test]
    fn credentials_parse_as_browsers_send_them() {
        assert_eq!(
            basic_credentials(b"Basic YWxpY2U6czNjOnJldA=="),
            Some(("alice".into(), "s3c:ret".into()))
        );
        assert_eq!(basic_credentials(b"Basic !!"), None);
        assert_eq!(basic_credentials(b"Digest x"), None);
    }
}
