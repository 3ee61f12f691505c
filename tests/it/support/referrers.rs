//! A registry that offers the OCI 1.1 referrers API: a proxy in front of a Distribution
//! registry (which has none) that answers `GET /v2/<name>/referrers/<digest>` from a table the
//! test fills, and forwards every other request, one request per connection.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

pub struct ReferrersProxy {
    pub host: String,
    /// Subject digest → descriptors of the manifests referring to it.
    pub table: Arc<Mutex<HashMap<String, Vec<serde_json::Value>>>>,
    /// Referrers requests answered, by path.
    pub asked: Arc<Mutex<Vec<String>>>,
}

impl ReferrersProxy {
    pub fn start(upstream: &str) -> ReferrersProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let table = Arc::new(Mutex::new(HashMap::new()));
        let asked = Arc::new(Mutex::new(Vec::new()));
        let (upstream, t, a) = (upstream.to_string(), table.clone(), asked.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let (upstream, t, a) = (upstream.clone(), t.clone(), a.clone());
                std::thread::spawn(move || serve(client, &upstream, &t, &a));
            }
        });
        ReferrersProxy { host, table, asked }
    }
}

fn serve(
    client: TcpStream,
    upstream: &str,
    table: &Mutex<HashMap<String, Vec<serde_json::Value>>>,
    asked: &Mutex<Vec<String>>,
) {
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if line == "\r\n" {
            break;
        }
        lines.push(line);
    }
    let path = lines.first().and_then(|l| l.split_whitespace().nth(1)).unwrap_or_default().to_string();
    let mut client = client;
    if let Some((_, rest)) = path.split_once("/referrers/") {
        asked.lock().unwrap().push(path.clone());
        let digest = rest.split('?').next().unwrap_or_default();
        let manifests = table.lock().unwrap().get(digest).cloned().unwrap_or_default();
        let body = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        }))
        .unwrap();
        let _ = write!(
            client,
            "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.index.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = client.write_all(&body);
        return;
    }
    // Only reads pass through here (Lifeboat never writes upstream): no request body.
    let Ok(mut server) = TcpStream::connect(upstream) else {
        return;
    };
    let mut head: String =
        lines.iter().filter(|l| !l.to_ascii_lowercase().starts_with("connection:")).cloned().collect();
    head.push_str("Connection: close\r\n\r\n");
    let _ = server.write_all(head.as_bytes());
    let mut response = Vec::new();
    let _ = server.read_to_end(&mut response);
    // The registry may keep the connection open: tell the client this one ends here.
    let text = String::from_utf8_lossy(&response);
    let split = text.find("\r\n\r\n").map_or(response.len(), |i| i + 4);
    let (head, body) = response.split_at(split);
    let head: String = String::from_utf8_lossy(head)
        .lines()
        .filter(|l| !l.is_empty() && !l.to_ascii_lowercase().starts_with("connection:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    let _ = client.write_all(format!("{head}Connection: close\r\n\r\n").as_bytes());
    let _ = client.write_all(body);
}
