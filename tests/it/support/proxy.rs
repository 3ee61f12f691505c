//! A fault-injecting HTTP proxy in front of a test registry: the first N requests get an
//! error response of the chosen status, everything after is forwarded untouched.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct FaultProxy {
    /// `127.0.0.1:PORT` to use instead of the registry's address.
    pub host: String,
    /// Requests answered with the injected failure.
    pub injected: Arc<AtomicUsize>,
    /// When each injected failure was sent, and for which request line.
    pub log: Arc<std::sync::Mutex<Vec<(std::time::Instant, String)>>>,
}

impl FaultProxy {
    /// Forwards to `upstream`; the first `failures` requests are answered with `status` (and
    /// `Retry-After: 1` for 429).
    pub fn start(upstream: &str, failures: usize, status: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let failures_left = Arc::new(AtomicUsize::new(failures));
        let injected = Arc::new(AtomicUsize::new(0));
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (left, count, upstream, record) =
            (failures_left.clone(), injected.clone(), upstream.to_string(), log.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let (left, count, upstream, record) = (left.clone(), count.clone(), upstream.clone(), record.clone());
                std::thread::spawn(move || serve(client, &upstream, &left, &count, &record, status));
            }
        });
        FaultProxy { host, injected, log }
    }
}

fn serve(
    client: TcpStream,
    upstream: &str,
    left: &AtomicUsize,
    count: &AtomicUsize,
    record: &std::sync::Mutex<Vec<(std::time::Instant, String)>>,
    status: u16,
) {
    let mut reader = BufReader::new(client.try_clone().unwrap());
    // Read the request head; bodies only come with uploads, which are forwarded whole.
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
            return;
        }
        head.extend_from_slice(&line);
        if line == b"\r\n" {
            break;
        }
    }
    let inject = left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
    if inject {
        count.fetch_add(1, Ordering::SeqCst);
        let line = String::from_utf8_lossy(&head).lines().next().unwrap_or_default().to_string();
        record.lock().unwrap().push((std::time::Instant::now(), line));
        let reason = if status == 429 { "Too Many Requests\r\nRetry-After: 1" } else { "Service Unavailable" };
        let mut client = client;
        let _ = write!(client, "HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    }
    let Ok(mut server) = TcpStream::connect(upstream) else {
        return;
    };
    let _ = server.write_all(&head);
    // Whatever the client already sent past the head, then both directions as they come.
    let buffered = reader.buffer().to_vec();
    let _ = server.write_all(&buffered);
    let mut client_read = reader.into_inner();
    let mut server_read = server.try_clone().unwrap();
    let mut client_write = client;
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_read, &mut server);
        let _ = server.shutdown(std::net::Shutdown::Write);
    });
    let mut buf = [0u8; 64 * 1024];
    loop {
        match server_read.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if client_write.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = client_write.shutdown(std::net::Shutdown::Both);
    let _ = up.join();
}
