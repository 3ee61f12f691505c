//! The mirror's CA bundle as nodes get it: PEM certificates only, each one a certificate a TLS
//! client can trust. A bundle that is not is refused here, before it reaches a node, where a bad
//! CA would only show as a TLS error that sends the runtime quietly back to the upstream.

use rustls_pki_types::CertificateDer;

/// The bundle as text, when every PEM block in it is a certificate that parses; otherwise why
/// not, in words that name the fix.
pub fn check(bytes: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "it is not PEM text (it is not even UTF-8)".to_string())?;
    let blocks = pem::parse_many(text).map_err(|e| format!("it is not valid PEM: {e}"))?;
    if blocks.is_empty() {
        return Err("it holds no PEM block: a CA bundle is one or more `-----BEGIN CERTIFICATE-----` blocks".into());
    }
    let mut roots = rustls::RootCertStore::empty();
    for (i, block) in blocks.iter().enumerate() {
        if block.tag() != "CERTIFICATE" {
            return Err(format!(
                "PEM block {} is a {}, not a CERTIFICATE: the bundle must hold the CA's certificates only",
                i + 1,
                block.tag()
            ));
        }
        roots
            .add(CertificateDer::from(block.contents().to_vec()))
            .map_err(|e| format!("certificate {} does not parse: {e}", i + 1))?;
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::check;

    const CA: &str = include_str!("../../example-repo/certs/internal-ca.pem");

    #[test]
    fn a_real_bundle_passes_and_anything_else_is_named() {
        assert_eq!(check(CA.as_bytes()).unwrap(), CA);
        let cases: [(&[u8], &str); 5] = [
            (b"", "no PEM block"),
            (b"not a certificate\n", "no PEM block"),
            (b"\xff\xfe", "not even UTF-8"),
            (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "not a CERTIFICATE"),
            (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "does not parse"),
        ];
        for (bytes, words) in cases {
            let why = check(bytes).unwrap_err();
            assert!(why.contains(words), "{why}");
        }
    }
}
