//! A fault-injecting HTTP proxy in front of a test registry. Either the first N requests get an
//! error response of the chosen status and everything after is forwarded untouched
//! ([`FaultProxy::start`]), or requests are forwarded until one matches a [`Rule`], which then
//! answers in the registry's place: a canned (hostile) response, a response that stalls midway,
//! or silence from then on, as a registry frozen by SIGSTOP gives ([`FaultProxy::with_rules`]).
//!
//! Rules look at every request, including later ones on a kept-alive connection: the bytes the
//! client sends are searched for each rule's pattern (a piece of a request line, such as
//! `GET /v2/app/tags/list`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What the proxy does with a request whose bytes contain `pattern`.
#[derive(Clone)]
pub struct Rule {
    pub pattern: String,
    pub action: Action,
}

#[derive(Clone)]
pub enum Action {
    /// Answer with these bytes (a whole HTTP response) and close the connection.
    Answer(Vec<u8>),
    /// Send these bytes (a response head and part of its body), then nothing more, keeping the
    /// connection open: a transfer that stalls.
    Stall(Vec<u8>),
    /// Answer nothing from this request on, on every connection, open or new, while keeping
    /// them open: the registry froze.
    Freeze,
}

impl Rule {
    pub fn new(pattern: &str, action: Action) -> Rule {
        Rule { pattern: pattern.to_string(), action }
    }
}

pub struct FaultProxy {
    /// `127.0.0.1:PORT` to use instead of the registry's address.
    pub host: String,
    /// Requests answered with the injected failure, or matched by a rule.
    pub injected: Arc<AtomicUsize>,
    /// When each injected failure or matched request was seen, and its request line.
    pub log: Arc<Mutex<Vec<(Instant, String)>>>,
}

struct Shared {
    upstream: String,
    failures_left: AtomicUsize,
    status: u16,
    rules: Vec<Rule>,
    frozen: AtomicBool,
    injected: Arc<AtomicUsize>,
    log: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl FaultProxy {
    /// Forwards to `upstream`; the first `failures` requests are answered with `status` (and
    /// `Retry-After: 1` for 429).
    pub fn start(upstream: &str, failures: usize, status: u16) -> FaultProxy {
        FaultProxy::spawn(upstream, failures, status, Vec::new())
    }

    /// Forwards to `upstream` until a request matches one of `rules` (the first that matches
    /// acts).
    pub fn with_rules(upstream: &str, rules: Vec<Rule>) -> FaultProxy {
        FaultProxy::spawn(upstream, 0, 0, rules)
    }

    /// The requests seen so far whose line contains `pattern`, among those a rule matched.
    pub fn matched(&self, pattern: &str) -> usize {
        self.log.lock().unwrap().iter().filter(|(_, line)| line.contains(pattern)).count()
    }

    fn spawn(upstream: &str, failures: usize, status: u16, rules: Vec<Rule>) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let injected = Arc::new(AtomicUsize::new(0));
        let log = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new(Shared {
            upstream: upstream.to_string(),
            failures_left: AtomicUsize::new(failures),
            status,
            rules,
            frozen: AtomicBool::new(false),
            injected: injected.clone(),
            log: log.clone(),
        });
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let shared = shared.clone();
                std::thread::spawn(move || serve(client, &shared));
            }
        });
        FaultProxy { host, injected, log }
    }
}

impl Shared {
    /// The rule matching `bytes`, and where its pattern starts.
    fn rule_in(&self, bytes: &[u8]) -> Option<(usize, &Rule)> {
        self.rules.iter().find_map(|rule| find(bytes, rule.pattern.as_bytes()).map(|at| (at, rule)))
    }

    fn record(&self, request: &[u8]) {
        self.injected.fetch_add(1, Ordering::SeqCst);
        let line = String::from_utf8_lossy(request).lines().next().unwrap_or_default().to_string();
        self.log.lock().unwrap().push((Instant::now(), line));
    }

    /// Carries out `rule` for the request starting at `request`, answering on `client`.
    fn act(&self, rule: &Rule, request: &[u8], client: &mut TcpStream) {
        self.record(request);
        match &rule.action {
            Action::Answer(bytes) => {
                let _ = client.write_all(bytes);
                let _ = client.shutdown(Shutdown::Both);
            }
            Action::Stall(bytes) => {
                let _ = client.write_all(bytes);
                hold(client);
            }
            Action::Freeze => {
                self.frozen.store(true, Ordering::SeqCst);
                hold(client);
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads and drops whatever the client sends, answering nothing, until it hangs up.
fn hold(client: &mut TcpStream) {
    let mut buf = [0u8; 64 * 1024];
    while matches!(client.read(&mut buf), Ok(n) if n > 0) {}
}

fn serve(mut client: TcpStream, shared: &Shared) {
    if shared.frozen.load(Ordering::SeqCst) {
        return hold(&mut client);
    }
    let mut reader = BufReader::new(client.try_clone().unwrap());
    // Read the request head; bodies only come with uploads, which are forwarded as they come.
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
    let inject = shared.failures_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
    if inject {
        shared.record(&head);
        let status = shared.status;
        let reason = if status == 429 { "Too Many Requests\r\nRetry-After: 1" } else { "Service Unavailable" };
        let _ = write!(client, "HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    }
    if shared.frozen.load(Ordering::SeqCst) {
        return hold(&mut client);
    }
    if let Some((_, rule)) = shared.rule_in(&head) {
        return shared.act(rule, &head, &mut client);
    }
    let Ok(mut server) = TcpStream::connect(&shared.upstream) else {
        return;
    };
    let _ = server.write_all(&head);
    // Whatever the client already sent past the head, then both directions as they come.
    let buffered = reader.buffer().to_vec();
    let mut client_read = reader.into_inner();
    let mut client_write = client;
    let hijacked = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let mut answer = client_write.try_clone().unwrap();
        let mut server_write = server.try_clone().unwrap();
        let hijacked = &hijacked;
        scope.spawn(move || {
            let mut pending = buffered;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                if shared.frozen.load(Ordering::SeqCst) {
                    hold(&mut client_read);
                    let _ = server_write.shutdown(Shutdown::Both);
                    return;
                }
                if let Some((at, rule)) = shared.rule_in(&pending) {
                    let _ = server_write.write_all(&pending[..at]);
                    hijacked.store(true, Ordering::SeqCst);
                    let _ = server_write.shutdown(Shutdown::Both);
                    return shared.act(rule, &pending[at..], &mut answer);
                }
                if server_write.write_all(&pending).is_err() {
                    break;
                }
                match client_read.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => pending = buf[..n].to_vec(),
                }
            }
            let _ = server_write.shutdown(Shutdown::Write);
        });
        let mut buf = [0u8; 64 * 1024];
        loop {
            match server.read(&mut buf) {
                Ok(0) | Err(_) => break,
                // A frozen registry sends nothing more; a hijacked connection is answered by
                // its rule.
                Ok(_) if shared.frozen.load(Ordering::SeqCst) || hijacked.load(Ordering::SeqCst) => return,
                Ok(n) => {
                    if client_write.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        if !shared.frozen.load(Ordering::SeqCst) && !hijacked.load(Ordering::SeqCst) {
            let _ = client_write.shutdown(Shutdown::Both);
        }
    });
}
