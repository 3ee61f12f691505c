//! A bearer-token service for a test registry, as Docker Hub and Harbor run one: the registry
//! answers 401 with a `Bearer realm=...` challenge, the client fetches a token here with its
//! basic credentials, and the registry checks the token's ES256 signature against the
//! certificate in its `rootcertbundle`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine;

pub const SERVICE: &str = "lifeboat-test-registry";
pub const ISSUER: &str = "lifeboat-test-token-issuer";

pub struct TokenServer {
    /// `http://127.0.0.1:PORT/token`
    pub realm: String,
    /// PEM file the registry trusts for token signatures.
    pub root_cert_bundle: PathBuf,
    /// Tokens issued so far.
    pub issued: Arc<AtomicUsize>,
}

impl TokenServer {
    pub fn start(dir: &Path, user: &str, password: &str) -> TokenServer {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["token-issuer".to_string()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "lifeboat test token issuer");
        let cert = params.self_signed(&key).unwrap();
        let root_cert_bundle = dir.join("token-root.pem");
        std::fs::write(&root_cert_bundle, cert.pem()).unwrap();
        let x5c = base64::engine::general_purpose::STANDARD.encode(cert.der());
        let encoding = jsonwebtoken::EncodingKey::from_ec_der(&key.serialize_der());
        let expected =
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let realm = format!("http://{}/token", listener.local_addr().unwrap());
        let issued = Arc::new(AtomicUsize::new(0));
        let count = issued.clone();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().map_while(Result::ok) {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                let mut authorization = None;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':')
                        && name.eq_ignore_ascii_case("authorization")
                    {
                        authorization = Some(value.trim().to_string());
                    }
                }
                let respond = |stream: &mut std::net::TcpStream, status: &str, body: &str| {
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                };
                let mut parts = request_line.split_whitespace();
                let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
                if method != "GET" {
                    respond(&mut stream, "404 Not Found", "{}");
                    continue;
                }
                if authorization.as_deref() != Some(expected.as_str()) {
                    respond(&mut stream, "401 Unauthorized", r#"{"details":"wrong credentials"}"#);
                    continue;
                }
                let access: Vec<serde_json::Value> = target
                    .split_once('?')
                    .map(|(_, q)| q)
                    .unwrap_or_default()
                    .split('&')
                    .filter_map(|kv| kv.strip_prefix("scope="))
                    .filter_map(|scope| {
                        let scope = scope.replace("%3A", ":").replace("%2C", ",").replace("%2F", "/");
                        let mut parts = scope.splitn(3, ':');
                        let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                        Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
                    })
                    .collect();
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
                let claims = serde_json::json!({
                    "iss": ISSUER, "sub": "lifeboat", "aud": SERVICE,
                    "exp": now + 300, "nbf": now - 10, "iat": now,
                    "jti": format!("{now}-{}", count.load(Ordering::SeqCst)),
                    "access": access,
                });
                let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
                header.x5c = Some(vec![x5c.clone()]);
                let token = jsonwebtoken::encode(&header, &claims, &encoding).unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                respond(
                    &mut stream,
                    "200 OK",
                    &serde_json::json!({"token": token, "access_token": token, "expires_in": 300}).to_string(),
                );
            }
        });
        TokenServer { realm, root_cert_bundle, issued }
    }
}
