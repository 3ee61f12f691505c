//! Whether a commit is signed by a trusted key: SSH signatures (`gpg.format=ssh`), checked
//! with `ssh-keygen -Y` against an allowed-signers file, the format `git` itself uses for
//! `gpg.ssh.allowedSignersFile`. GPG signatures are recognised and refused with a plain reason.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context;

/// The namespace git signs commits in.
const NAMESPACE: &str = "git";

/// Keys whose SSH signatures are trusted, one `principal key-type key` per line.
#[derive(Debug, Clone)]
pub struct AllowedSigners {
    file: PathBuf,
}

impl AllowedSigners {
    pub fn new(file: &Path) -> anyhow::Result<AllowedSigners> {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        anyhow::ensure!(
            text.lines().any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')),
            "{} lists no key: write one `principal ssh-ed25519 AAAA...` line per trusted signer",
            file.display()
        );
        Ok(AllowedSigners { file: file.to_path_buf() })
    }

    /// The principal whose key made `signature` over `data`, or why it is not trusted.
    pub fn verify(&self, signature: &[u8], data: &[u8]) -> anyhow::Result<Result<String, String>> {
        if signature.starts_with(b"-----BEGIN PGP SIGNATURE-----") {
            return Ok(Err("it is signed with GPG; only SSH signatures are checked".into()));
        }
        if !signature.starts_with(b"-----BEGIN SSH SIGNATURE-----") {
            return Ok(Err("its signature is of an unknown kind".into()));
        }
        let scratch = tempfile::tempdir().context("making a temporary folder for the signature")?;
        let sig = scratch.path().join("commit.sig");
        std::fs::write(&sig, signature).context("writing the signature")?;
        let found = ssh_keygen(&["-Y", "find-principals", "-f", path(&self.file)?, "-s", path(&sig)?], None)?;
        let Some(principal) = found.ok().and_then(|out| out.lines().next().map(str::to_string)) else {
            return Ok(Err(format!("its key is not in {}", self.file.display())));
        };
        let verified = ssh_keygen(
            &["-Y", "verify", "-f", path(&self.file)?, "-I", &principal, "-n", NAMESPACE, "-s", path(&sig)?],
            Some(data),
        )?;
        Ok(match verified {
            Ok(_) => Ok(principal),
            Err(why) => Err(format!("its signature by {principal} does not verify: {why}")),
        })
    }
}

fn path(p: &Path) -> anyhow::Result<&str> {
    p.to_str().ok_or_else(|| anyhow::anyhow!("{} is not a UTF-8 path", p.display()))
}

/// Runs ssh-keygen: `Ok(stdout)` on success, `Err(stderr)` when it refuses.
fn ssh_keygen(args: &[&str], stdin: Option<&[u8]>) -> anyhow::Result<Result<String, String>> {
    let mut child = Command::new("ssh-keygen")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running ssh-keygen (package openssh-client), which checks commit signatures")?;
    let mut input = child.stdin.take().expect("stdin is piped");
    input.write_all(stdin.unwrap_or_default()).context("writing to ssh-keygen")?;
    drop(input);
    let out = child.wait_with_output().context("running ssh-keygen")?;
    Ok(if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    })
}
