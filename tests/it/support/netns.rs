//! A network namespace of the test's own (`ip netns add`), with its own loopback: the thread
//! that enters it, and every thread and process it starts afterwards (registries, containerd,
//! the lifeboat binary, skopeo), see only that loopback, so a port can be black-holed with
//! `iptables` there, exactly as a firewall drill does, without touching the machine's own
//! network. Removed when dropped. Needs root; where `ip netns` is refused, [`NetNs::create`]
//! says why and tests fall back to stopping or pausing the registry.

use std::os::fd::AsRawFd as _;
use std::process::Command;

pub struct NetNs {
    name: String,
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl NetNs {
    /// A new namespace with its loopback up, or why there can be none here.
    pub fn create() -> Result<NetNs, String> {
        let name = format!("lifeboat-test-{}-{}", std::process::id(), fastrand::u32(..));
        run(&["ip", "netns", "add", &name])?;
        let ns = NetNs { name };
        run(&["ip", "netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Moves the calling thread into the namespace (setns). Only this thread moves, and what it
    /// starts from now on.
    pub fn enter(&self) {
        let file = std::fs::File::open(format!("/var/run/netns/{}", self.name)).expect("the namespace's file");
        // SAFETY: setns on a valid namespace file descriptor affects only the calling thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns into {}: {}", self.name, std::io::Error::last_os_error());
    }

    /// Drops every packet to 127.0.0.1:`port` inside the namespace: connections hang until the
    /// client gives up, as behind a firewall that drops rather than refuses.
    pub fn black_hole(&self, port: u16) {
        let port = port.to_string();
        run(&[
            "ip",
            "netns",
            "exec",
            &self.name,
            "iptables",
            "-A",
            "OUTPUT",
            "-p",
            "tcp",
            "-d",
            "127.0.0.1",
            "--dport",
            &port,
            "-j",
            "DROP",
        ])
        .expect("iptables in the test's namespace");
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = run(&["ip", "netns", "del", &self.name]);
    }
}

/// Runs `scenario` on a thread of its own inside a new network namespace, or, where none can be
/// made, on a thread in the machine's network with `None` and a message saying so.
pub fn isolated<T: Send + 'static>(scenario: impl FnOnce(Option<&NetNs>) -> T + Send + 'static) -> T {
    let handle = std::thread::spawn(move || match NetNs::create() {
        Ok(ns) => {
            ns.enter();
            let result = scenario(Some(&ns));
            drop(ns);
            result
        }
        Err(why) => {
            eprintln!("no network namespace ({why}): the upstream outage falls back to a stopped registry");
            scenario(None)
        }
    });
    match handle.join() {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
