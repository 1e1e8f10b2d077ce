//! The environment of every sandbox: where the proxy is, which CA bundle to trust, and
//! nothing else. The host's environment is cleared, so no token, secret or host path
//! can leak in through it.

use crate::paths;

/// Where programs inside the sandbox find the shim.
pub const PROXY_URL: &str = "http://127.0.0.1:3128";

/// The complete environment of a sandboxed command, as `(name, value)` pairs.
pub fn sandbox_env() -> Vec<(String, String)> {
    let mut env: Vec<(&str, &str)> = vec![
        (
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ),
        ("HOME", paths::WORKSPACE),
        ("USER", "agent"),
        ("LOGNAME", "agent"),
        ("SHELL", "/bin/bash"),
        ("LANG", "C.UTF-8"),
        ("TERM", "dumb"),
        ("TMPDIR", "/tmp"),
        ("HTTP_PROXY", PROXY_URL),
        ("HTTPS_PROXY", PROXY_URL),
        ("http_proxy", PROXY_URL),
        ("https_proxy", PROXY_URL),
        ("ALL_PROXY", PROXY_URL),
        ("all_proxy", PROXY_URL),
        ("NO_PROXY", "localhost,127.0.0.1,::1"),
        ("no_proxy", "localhost,127.0.0.1,::1"),
        ("SSL_CERT_FILE", paths::CA_BUNDLE),
        ("REQUESTS_CA_BUNDLE", paths::CA_BUNDLE),
        ("CURL_CA_BUNDLE", paths::CA_BUNDLE),
        ("NODE_EXTRA_CA_CERTS", paths::CA_BUNDLE),
        ("GIT_SSL_CAINFO", paths::CA_BUNDLE),
        ("PIP_CERT", paths::CA_BUNDLE),
        ("NODE_USE_ENV_PROXY", "1"),
    ];
    // pip refuses to write outside HOME-relative caches it cannot create otherwise;
    // keeping them in the workspace makes repeated runs faster.
    env.push(("PIP_DISABLE_PIP_VERSION_CHECK", "1"));
    env.into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Builds the CA bundle text: the host's system roots (if found) plus the vault CA.
pub fn ca_bundle(vault_ca_pem: &str) -> String {
    let mut bundle = String::new();
    for candidate in [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
    ] {
        if let Ok(text) = std::fs::read_to_string(candidate) {
            bundle.push_str(&text);
            if !bundle.ends_with('\n') {
                bundle.push('\n');
            }
            break;
        }
    }
    bundle.push_str("# Palisade vault CA\n");
    bundle.push_str(vault_ca_pem.trim_end());
    bundle.push('\n');
    bundle
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_points_every_client_at_the_shim_and_bundle() {
        let env = sandbox_env();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        for name in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
            assert_eq!(get(name), Some(PROXY_URL));
        }
        for name in [
            "SSL_CERT_FILE",
            "REQUESTS_CA_BUNDLE",
            "CURL_CA_BUNDLE",
            "NODE_EXTRA_CA_CERTS",
            "GIT_SSL_CAINFO",
            "PIP_CERT",
        ] {
            assert_eq!(get(name), Some(paths::CA_BUNDLE));
        }
        assert_eq!(get("HOME"), Some(paths::WORKSPACE));
        assert_eq!(get("NODE_USE_ENV_PROXY"), Some("1"));
        assert!(get("NO_PROXY").unwrap().contains("127.0.0.1"));
        // Nothing in it names a host path.
        for (_, value) in &env {
            assert!(
                !value.contains("/root") && !value.contains("/home/"),
                "{value}"
            );
        }
    }

    #[test]
    fn bundle_ends_with_the_vault_ca() {
        let bundle = ca_bundle("-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n");
        assert!(bundle.trim_end().ends_with("-----END CERTIFICATE-----"));
        assert!(bundle.contains("# Palisade vault CA"));
    }
}
