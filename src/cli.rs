//! The command line: every subcommand and flag, each flag also settable by environment.
//!
//! Only parsing lives here; `main.rs` starts logging and dispatches to the library.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Keep Kubernetes clusters deployable when their container registries fail.
///
/// Lifeboat reads a desired state (Registry, MirrorSet, PrePullSet, BackupPolicy and FailoverSet
/// documents) from a folder or a Git repository and keeps an internal mirror, node caches and
/// offline backups in line with it; `failover render` writes the node files that make nodes fall
/// back to the mirror.
///
/// Exit codes, for every command: 0 success, in sync, valid, verified; 1 the command worked and
/// the answer needs attention (changes to make, images a person must act on, not verified,
/// FAIL, missing); 2 invalid input, an error, or something could not be looked at.
#[derive(Debug, Parser)]
#[command(name = "lifeboat", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// Output format of results on stdout.
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Human, env = "LIFEBOAT_OUTPUT")]
    pub output: Output,
    /// Format of logs on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "LIFEBOAT_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Log filter, such as `info` or `lifeboat=debug`.
    #[arg(long, global = true, default_value = "warn", env = "LIFEBOAT_LOG")]
    pub log: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Text for people.
    Human,
    /// JSON for machines.
    Json,
    /// Markdown for pull-request comments and tickets (`diff`, `plan`).
    Markdown,
}

impl Output {
    pub fn name(self) -> &'static str {
        match self {
            Output::Human => "human",
            Output::Json => "json",
            Output::Markdown => "markdown",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a desired-state folder offline and report every problem at once.
    ///
    /// Exit 0 when valid (warnings are printed), 2 when invalid.
    Validate(ValidateArgs),
    /// Show what a change to the desired state will do, from two Git revisions, offline.
    ///
    /// Reads both revisions straight from Git objects (no checkout; works on bare repositories
    /// and CI clones). Exit 0 no change, 1 changes, 2 invalid desired state or error.
    Diff(DiffArgs),
    /// Show what a pass would change, from the registries and cluster as they are now, changing
    /// nothing.
    ///
    /// Observes upstream, mirror and cluster (read-only credentials suffice) and prints the
    /// plan. Exit 0 in sync; 1 changes to make, or desired images a person must act on
    /// (rejected by the signature policy, or neither upstream nor in the mirror); 2 invalid
    /// desired state, an error, or something could not be observed (upstream unreachable).
    Plan(PlanArgs),
    /// Run one full pass: observe, plan, and copy, back up, prune and pre-pull as planned.
    ///
    /// One failing image does not stop the pass. Exit 0 when everything was observed and done;
    /// 1 when it was, but desired images need a person (rejected by the signature policy, or
    /// neither upstream nor in the mirror); 2 when anything failed or could not be observed, or
    /// the desired state is invalid.
    Apply(Box<ApplyArgs>),
    /// The daemon: follow the desired state, sync each MirrorSet on its schedule, commit status.
    ///
    /// Fetches the repository every `--poll` (or at once on `POST /trigger` or a push
    /// webhook), copies what is missing first, then runs each set on its cron schedule
    /// (skipping a run while the previous one of that set is still going). Serves /healthz,
    /// /readyz and /metrics. Stops on SIGTERM, letting running syncs finish within
    /// `--shutdown-timeout`.
    Run(Box<RunArgs>),
    /// Check the cosign signatures of one image, for incident use.
    ///
    /// Give the signers to accept (`--key`, or `--identity`/`--identity-regex` with `--issuer`
    /// and `--trust-root`), or take them from a MirrorSet of the desired state with
    /// `--mirror-set`. Only the registry of the image is contacted. Exit 0 verified, 1 not
    /// verified (the reason is printed), 2 error (registry unreachable, unusable key file).
    Verify(VerifyArgs),
    /// Air-gapped backup archives.
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Push the images of a backup archive into a registry, for air-gapped recovery.
    ///
    /// Verifies the whole archive first (and any archives an incremental one builds on) and
    /// refuses it when anything fails. Then streams it once, with no extraction: blobs the
    /// registry has are skipped, manifests are pushed after every blob and tags last. Prints a
    /// summary; with `--verify-key`, checks each restored image's signature in the registry.
    /// Exit 0 restored (and verified), 2 refused or failed.
    Restore(RestoreArgs),
    /// Print the JSON Schema of the desired-state documents.
    Schema(SchemaArgs),
    /// Node failover: the container runtime files that make nodes pull from the mirror when an
    /// upstream registry fails.
    #[command(subcommand)]
    Failover(FailoverCommand),
    /// Node agent of `method: cri` PrePullSets: pull their images into this node's runtime.
    ///
    /// Runs in a DaemonSet pod on every node the set selects. Each round it reads the images file (one
    /// mirror reference pinned by digest per line), asks the runtime over its CRI socket which
    /// it holds, pulls the others (`--parallel` at a time) with the credentials of the mounted
    /// pull secrets, reads the kubelet's image GC settings, and reports an inventory: into the
    /// ConfigMap `lifeboat-inventory-<set>-<node>` (`--report kubernetes`) or as one JSON line on
    /// stdout (`--report stdout`). Repeats every `--interval` until SIGTERM (exit 0); a round
    /// that fails is logged and retried. With `--once`: exit 0 when every image is present or
    /// was pulled, 1 when any is missing (still reported), 2 on an error (runtime socket or
    /// images file unusable, report not written). The report on stdout is one line for people,
    /// or with `-o json` one JSON document.
    NodeAgent(NodeAgentArgs),
}

#[derive(Debug, Args)]
pub struct SchemaArgs {}

#[derive(Debug, Subcommand)]
pub enum FailoverCommand {
    /// Render the node files of FailoverSets for one container runtime, offline.
    ///
    /// For people who manage node files themselves (MachineConfig, Talos, Ignition, Ansible):
    /// reads the desired state (a folder, or `--repo`), contacts no registry and no cluster, and
    /// writes the files the runtime reads, each starting with Lifeboat's ownership line and the
    /// hash of its content. containerd: `<upstream host>/hosts.toml` (and the mirror's CA beside
    /// it) for the directory its `config_path` names, usually /etc/containerd/certs.d. crio:
    /// `registries.conf.d/50-lifeboat-<set>.conf` and `certs.d/<mirror>/` for /etc/containers,
    /// also read by podman and skopeo. k3s: `registries.yaml` for /etc/rancher/k3s (RKE2:
    /// /etc/rancher/rke2, with `--k3s-dir`). With `--out DIR` the files are written into DIR as
    /// the runtime reads it, each atomically; a file there that is not Lifeboat's is left alone
    /// and reported, and Lifeboat's files of the rendered sets that are no longer wanted are
    /// removed. Without `--out` they are printed, each headed by its path. Exit 0 rendered, 2
    /// invalid desired state or error (a CA bundle that is not one, missing mirror credentials,
    /// a file in DIR that is not Lifeboat's).
    Render(FailoverRenderArgs),
}

/// The container runtimes `failover render` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailoverRuntime {
    /// containerd 1.6 or later: hosts.toml files.
    Containerd,
    /// CRI-O, podman, skopeo: a registries.conf.d drop-in.
    Crio,
    /// k3s and RKE2: registries.yaml.
    K3s,
}

#[derive(Debug, Args)]
pub struct FailoverRenderArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// The container runtime the files are for.
    #[arg(long, value_enum, env = "LIFEBOAT_FAILOVER_RUNTIME")]
    pub runtime: FailoverRuntime,
    /// Only this FailoverSet (default: every set written for the runtime).
    #[arg(long = "set", value_name = "NAME", env = "LIFEBOAT_FAILOVER_SET")]
    pub set: Option<String>,
    /// Write the files into DIR, laid out as the runtime reads it, instead of printing them.
    #[arg(long, value_name = "DIR", env = "LIFEBOAT_FAILOVER_OUT")]
    pub out: Option<PathBuf>,
    /// The mirror's credentials, for sets that name a `mirrorPullSecret`: the Secret's content,
    /// a Docker config.json (`.dockerconfigjson`) with an entry for the mirror host.
    #[arg(long, value_name = "FILE", env = "LIFEBOAT_MIRROR_CREDENTIALS")]
    pub mirror_credentials: Option<PathBuf>,
    /// Where k3s's directory is on the nodes: registries.yaml names its CA files by absolute
    /// path.
    #[arg(long, value_name = "DIR", default_value = crate::failover::k3s::DIR, env = "LIFEBOAT_K3S_DIR")]
    pub k3s_dir: String,
}

/// Where the node agent reports its inventory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Report {
    /// A ConfigMap per set and node, through the Kubernetes API.
    Kubernetes,
    /// One JSON document per round on stdout.
    Stdout,
}

#[derive(Debug, Args)]
pub struct NodeAgentArgs {
    /// The PrePullSet this agent serves.
    #[arg(long = "set", value_name = "NAME", env = "LIFEBOAT_PRE_PULL_SET")]
    pub set: String,
    /// This node's name, from the downward API (`spec.nodeName`). Needed for `--report
    /// kubernetes`; default for stdout: the host name.
    #[arg(long, env = "LIFEBOAT_NODE_NAME")]
    pub node_name: Option<String>,
    /// The set's images, one reference pinned by digest per line (`#` comments); mounted from
    /// a ConfigMap and read again every round.
    #[arg(long, value_name = "FILE", env = "LIFEBOAT_IMAGES_FILE")]
    pub images_file: PathBuf,
    /// The container runtime's CRI socket (containerd or CRI-O), mounted from the node.
    #[arg(long, value_name = "PATH", default_value = crate::desired::DEFAULT_CRI_SOCKET, env = "LIFEBOAT_CRI_SOCKET")]
    pub cri_socket: PathBuf,
    /// Images looked at and pulled at once, 1 to 32.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=32), env = "LIFEBOAT_PARALLEL")]
    pub parallel: u32,
    /// Folder of mounted `kubernetes.io/dockerconfigjson` Secrets, one subfolder per Secret
    /// (`DIR/<secret>/.dockerconfigjson`, or `config.json`); each image takes the credentials
    /// for its registry host.
    #[arg(long, value_name = "DIR", env = "LIFEBOAT_PULL_SECRET_DIR")]
    pub pull_secret_dir: Option<PathBuf>,
    /// The kubelet's configuration file (KubeletConfiguration, YAML or JSON), mounted read-only
    /// from the node, for its image GC settings.
    #[arg(long, value_name = "FILE", env = "LIFEBOAT_KUBELET_CONFIG")]
    pub kubelet_config: Option<PathBuf>,
    /// Where the inventory goes.
    #[arg(long, value_enum, default_value_t = Report::Kubernetes, env = "LIFEBOAT_REPORT")]
    pub report: Report,
    /// Namespace of the inventory ConfigMaps (default: the pod's namespace, from
    /// POD_NAMESPACE, else `lifeboat-node-agent`).
    #[arg(long, env = "LIFEBOAT_NAMESPACE")]
    pub namespace: Option<String>,
    /// Time between rounds.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, env = "LIFEBOAT_INTERVAL")]
    pub interval: std::time::Duration,
    /// Longest wait for one image's pull.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration, env = "LIFEBOAT_PULL_TIMEOUT")]
    pub pull_timeout: std::time::Duration,
    /// Run one round, report it and exit (0 all present, 1 some missing, 2 error).
    #[arg(long, env = "LIFEBOAT_ONCE")]
    pub once: bool,
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Write an archive of a BackupPolicy's images, read from the mirror (never upstream).
    ///
    /// The images of the policy's MirrorSets as mirrored, and its own images, with their
    /// signature, attestation and SBOM tags, as an OCI image layout in a tar (zstd, gzip or
    /// plain, as the policy says), streamed: no blob is held in memory and no disk is needed
    /// beyond the archive. Encrypted to the policy's age recipients and split into parts when
    /// it says so. The archive is verified after writing, recorded next to it
    /// (`ARCHIVE.lifeboat.json`), and the policy's retention applied. Exit 0 written and
    /// verified, 2 otherwise (images the mirror lacks are listed and make the exit 2).
    Export(Box<BackupExportArgs>),
    /// Re-hash every file of an archive against its checksums, reading it once.
    ///
    /// Prints PASS, or FAIL naming each file or blob that does not match. Exit 0 PASS, 1 FAIL,
    /// 2 when the archive cannot be read or is refused (a path leaving the archive, a link or
    /// device entry).
    Verify(BackupVerifyArgs),
    /// List the archives in a backup directory, newest first, from their records.
    ///
    /// One line per archive: name, time (UTC), size, images, integrity as last recorded (PASS,
    /// FAIL or UNKNOWN; "(stored)" when only the stored, encrypted files were checked),
    /// encryption, parts, and the base of an incremental archive. FAIL also when a recorded
    /// part is missing or has another size. Archives without a record and files of an
    /// interrupted export are listed with a note. Reads the records and file sizes only and
    /// re-hashes nothing: `backup verify` re-hashes. Exit 0, 2 when the directory cannot be
    /// read.
    List(BackupListArgs),
}

#[derive(Debug, Args)]
pub struct BackupListArgs {
    /// The backup directory: a BackupPolicy's `destination`.
    #[arg(env = "LIFEBOAT_BACKUP_DIR")]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct BackupVerifyArgs {
    /// The archive (`.tar`, `.tar.zst` or `.tar.gz`, maybe `.age`; the compression is
    /// recognised), or the first of its parts.
    #[arg(env = "LIFEBOAT_ARCHIVE")]
    pub archive: PathBuf,
    #[command(flatten)]
    pub identities: IdentityArgs,
    /// Also check the metadata's cosign signature against this public key (PEM).
    #[arg(id = "keys", long = "key", value_name = "FILE", env = "LIFEBOAT_VERIFY_KEY")]
    pub key: Option<PathBuf>,
}

/// Keys that decrypt archives encrypted with age.
#[derive(Debug, Clone, Args)]
pub struct IdentityArgs {
    /// An age identity file (`AGE-SECRET-KEY-1...`) or the SSH private key of one of the
    /// archive's recipients; repeatable. Needed for encrypted archives.
    #[arg(long = "identity", short = 'i', value_name = "FILE", value_delimiter = ',', env = "LIFEBOAT_AGE_IDENTITY")]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BackupExportArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// The BackupPolicy to run.
    #[arg(long, env = "LIFEBOAT_BACKUP_POLICY")]
    pub policy: String,
    /// Write the archive here instead of the policy's destination.
    #[arg(long, value_name = "DIR", env = "LIFEBOAT_BACKUP_DESTINATION")]
    pub destination: Option<PathBuf>,
    /// Incremental: store only the blobs this earlier archive (and the archives it builds on)
    /// lacks. Restoring the new archive then needs those archives in the same folder.
    #[arg(long, value_name = "ARCHIVE", env = "LIFEBOAT_BACKUP_BASE")]
    pub base: Option<PathBuf>,
    #[command(flatten)]
    pub signing: SigningArgs,
    /// With an encrypted policy: decrypt the new archive with this identity to re-hash its
    /// content. Without it, the stored (encrypted) bytes are checked against their sums.
    #[command(flatten)]
    pub identities: IdentityArgs,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The archive, or the first of its parts. An incremental archive needs the archives it
    /// builds on in the same folder.
    #[arg(env = "LIFEBOAT_ARCHIVE")]
    pub archive: PathBuf,
    /// Registry to restore into, with an optional repository prefix:
    /// `registry.internal:5000` or `registry.internal:5000/restored`. Images keep their
    /// mirror path under it.
    #[arg(long, value_name = "REGISTRY[/PREFIX]", env = "LIFEBOAT_RESTORE_TO")]
    pub to: String,
    #[command(flatten)]
    pub identities: IdentityArgs,
    /// Reach the registry over plain HTTP.
    #[arg(long, env = "LIFEBOAT_INSECURE")]
    pub insecure: bool,
    /// Credentials for the registry, in Docker's config.json format (as `skopeo --authfile`).
    #[arg(long, value_name = "FILE", env = "LIFEBOAT_AUTHFILE")]
    pub authfile: Option<PathBuf>,
    /// After restoring, check each image's cosign signature in the registry against this
    /// public key (PEM); repeatable, any one may have signed.
    #[arg(
        long = "key",
        visible_alias = "verify-key",
        value_name = "FILE",
        value_delimiter = ',',
        env = "LIFEBOAT_VERIFY_KEY"
    )]
    pub keys: Vec<PathBuf>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The image: a tag or digest reference, such as `mirror.internal:5000/vendor/app:1.2`.
    #[arg(env = "LIFEBOAT_IMAGE")]
    pub image: String,
    /// Cosign public key (PEM) to accept; repeat it (or separate with commas) to accept any
    /// of several.
    #[arg(long = "key", value_name = "FILE", value_delimiter = ',', env = "LIFEBOAT_VERIFY_KEY")]
    pub keys: Vec<PathBuf>,
    /// Keyless: the certificate identity (email or URI) to accept (as cosign's flag).
    #[arg(
        long = "certificate-identity",
        alias = "identity",
        value_name = "IDENTITY",
        conflicts_with = "identity_regex",
        requires = "issuer",
        env = "LIFEBOAT_VERIFY_IDENTITY"
    )]
    pub identity: Option<String>,
    /// Keyless: a regular expression the certificate identity must match.
    #[arg(
        long = "certificate-identity-regexp",
        alias = "identity-regex",
        value_name = "REGEX",
        requires = "issuer",
        env = "LIFEBOAT_VERIFY_IDENTITY_REGEX"
    )]
    pub identity_regex: Option<String>,
    /// Keyless: the OIDC issuer the certificate must name.
    #[arg(long = "certificate-oidc-issuer", alias = "issuer", value_name = "URL", env = "LIFEBOAT_VERIFY_ISSUER")]
    pub issuer: Option<String>,
    /// Keyless: the Sigstore trust root (`trusted_root.json`) certificates must chain to.
    #[arg(long, value_name = "FILE", env = "LIFEBOAT_VERIFY_TRUST_ROOT")]
    pub trust_root: Option<PathBuf>,
    /// An annotation every accepted signature must carry, `KEY=VALUE`; repeatable.
    #[arg(long = "annotation", value_name = "KEY=VALUE", value_delimiter = ',', env = "LIFEBOAT_VERIFY_ANNOTATIONS")]
    pub annotations: Vec<String>,
    /// Accept what this MirrorSet's `signatures` accept (needs `--dir`).
    #[arg(long, requires = "path", env = "LIFEBOAT_VERIFY_MIRROR_SET")]
    pub mirror_set: Option<String>,
    /// Desired-state folder: its Registry documents give credentials, CA files and plain-HTTP
    /// hosts, and `--mirror-set` its policy.
    #[arg(id = "path", long = "dir", value_name = "PATH", env = "LIFEBOAT_DIR")]
    pub dir: Option<PathBuf>,
    /// Reach the image's registry over plain HTTP (for one the desired state does not describe).
    #[arg(long, env = "LIFEBOAT_INSECURE")]
    pub insecure: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// The desired state: a folder, or a branch of a Git repository.
#[derive(Debug, Clone, Args)]
pub struct SourceArgs {
    /// Folder holding the desired-state YAML files (default `.`); not with `--repo`.
    #[arg(value_name = "PATH", env = "LIFEBOAT_DIR")]
    pub path: Option<PathBuf>,
    #[command(flatten)]
    pub git: GitArgs,
}

/// How registries are reached.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Registries")]
pub struct RegistryArgs {
    /// Longest wait for one registry request, and for any read during a blob transfer. A host
    /// that does not answer within it is not asked again for the rest of the pass.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration, env = "LIFEBOAT_TIMEOUT")]
    pub timeout: std::time::Duration,
    /// Retries after a transient registry failure (5xx, 429, connection error).
    #[arg(long, default_value_t = 4, env = "LIFEBOAT_RETRIES")]
    pub retries: u32,
}

/// The key that signs backup metadata.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Signing backup metadata")]
pub struct SigningArgs {
    /// Sign backup metadata with this cosign private key (`cosign generate-key-pair`).
    #[arg(
        long = "backup-signing-key",
        visible_alias = "signing-key",
        value_name = "FILE",
        env = "LIFEBOAT_BACKUP_SIGNING_KEY"
    )]
    pub key: Option<PathBuf>,
    /// The signing key's password. Prefer the environment variable: a flag's value shows in the
    /// process list.
    #[arg(
        long = "signing-key-password",
        value_name = "PASSWORD",
        env = "LIFEBOAT_SIGNING_KEY_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
    /// The same, under cosign's own variable, when LIFEBOAT_SIGNING_KEY_PASSWORD is not set.
    #[arg(long = "cosign-password", value_name = "PASSWORD", env = "COSIGN_PASSWORD", hide_env_values = true)]
    pub cosign_password: Option<String>,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Handle only shard I of N (0-based) of the mirror: the images whose mirror repository
    /// hashes to it, so N processes given 0/N to N-1/N share a pass with no coordination. A
    /// shard's pass is the mirror stage alone and publishes no status.
    #[arg(long, value_name = "I/N", env = "LIFEBOAT_SHARD")]
    pub shard: Option<crate::shard::Shard>,
}

/// The Kubernetes cluster whose nodes PrePullSets cover.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Pre-pull on the cluster's nodes")]
pub struct ClusterArgs {
    /// `auto`: use the cluster of the kubeconfig (KUBECONFIG, ~/.kube/config) or of the pod's
    /// service account when there is one; without one, pre-pull is reported as not observed.
    /// `off`: never talk to Kubernetes.
    #[arg(long = "cluster", value_enum, default_value = "auto", env = "LIFEBOAT_CLUSTER")]
    pub mode: ClusterMode,
    /// Namespace of the pre-pull DaemonSets of method kubelet (default: the pod's namespace,
    /// from POD_NAMESPACE, else `lifeboat`). Plans name it even without a cluster.
    #[arg(long, value_name = "NAMESPACE", env = "LIFEBOAT_PREPULL_NAMESPACE")]
    pub prepull_namespace: Option<String>,
    /// Namespace of the node agents of method cri; they mount the runtime socket, so its Pod
    /// Security level must be `privileged`.
    #[arg(
        long,
        value_name = "NAMESPACE",
        default_value = DEFAULT_AGENT_NAMESPACE,
        env = "LIFEBOAT_NODE_AGENT_NAMESPACE"
    )]
    pub node_agent_namespace: String,
    /// The Lifeboat image pre-pull pods start from (its static no-op program and the node agent).
    #[arg(long, value_name = "IMAGE", default_value = concat!("ghcr.io/lifeboat-dev/lifeboat:", env!("CARGO_PKG_VERSION")), env = "LIFEBOAT_PREPULL_IMAGE")]
    pub lifeboat_image: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClusterMode {
    Auto,
    Off,
}

/// Where Lifeboat's own objects go when neither a flag nor the pod's namespace says.
pub const DEFAULT_NAMESPACE: &str = "lifeboat";
/// The node agents' namespace, likewise (it must allow privileged pods).
pub const DEFAULT_AGENT_NAMESPACE: &str = "lifeboat-node-agent";

/// Where the desired state comes from when it lives in Git.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Desired state from Git")]
pub struct GitArgs {
    /// Git repository holding the desired state: a path, `file://`, `https://`, `ssh://` or
    /// `user@host:path` URL. Without it, the desired state is read from PATH.
    #[arg(long = "repo", value_name = "URL", env = "LIFEBOAT_REPO")]
    pub url: Option<String>,
    /// Branch to follow.
    #[arg(long, default_value = "main", env = "LIFEBOAT_BRANCH")]
    pub branch: String,
    /// Folder of the desired state inside the repository (default: the whole repository).
    #[arg(long = "path", value_name = "DIR", env = "LIFEBOAT_PATH")]
    pub subdir: Option<String>,
    /// User name for https (default `x-access-token` when only a password or token is given).
    #[arg(long, env = "LIFEBOAT_GIT_USERNAME")]
    pub git_username: Option<String>,
    /// File holding the https password or access token.
    #[arg(long, value_name = "FILE", env = "LIFEBOAT_GIT_PASSWORD_FILE", conflicts_with = "git_password")]
    pub git_password_file: Option<PathBuf>,
    /// The https password or access token itself. Prefer the environment variable or
    /// `--git-password-file`: a flag's value shows in the process list.
    #[arg(long, value_name = "TOKEN", env = "LIFEBOAT_GIT_PASSWORD", hide_env_values = true)]
    pub git_password: Option<String>,
    /// Private key for ssh remotes.
    #[arg(long, value_name = "FILE", env = "LIFEBOAT_GIT_SSH_KEY")]
    pub git_ssh_key: Option<PathBuf>,
    /// known_hosts file the ssh remote's host key must be listed in.
    #[arg(long, value_name = "FILE", env = "LIFEBOAT_GIT_KNOWN_HOSTS")]
    pub git_known_hosts: Option<PathBuf>,
    /// Apply only a desired state whose last change is a commit signed with an SSH key listed
    /// in this allowed-signers file (`principal ssh-ed25519 AAAA...` per line, as git's
    /// `gpg.ssh.allowedSignersFile`); anything else is reported and not applied.
    #[arg(long, value_name = "FILE", env = "LIFEBOAT_VERIFY_COMMITS")]
    pub verify_commits: Option<PathBuf>,
    /// Folder of the status report in the repository: never read as desired state, and the
    /// only place status commits change.
    #[arg(long, default_value = "status", env = "LIFEBOAT_STATUS_PATH")]
    pub status_path: String,
    /// Folder for the local clone (default: a temporary folder, removed at exit).
    #[arg(long, value_name = "DIR", env = "LIFEBOAT_CHECKOUT_DIR")]
    pub checkout_dir: Option<PathBuf>,
}

/// Where and how the status report is committed.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Status written back to Git")]
pub struct StatusArgs {
    /// Branch the status is committed to (default: the branch followed).
    #[arg(long, env = "LIFEBOAT_STATUS_BRANCH")]
    pub status_branch: Option<String>,
    /// Author and committer of status commits, `Name <email>`.
    #[arg(long, default_value = "Lifeboat <lifeboat@localhost>", env = "LIFEBOAT_STATUS_AUTHOR")]
    pub status_author: String,
    /// Message of status commits.
    #[arg(long, default_value = "Lifeboat status", env = "LIFEBOAT_STATUS_MESSAGE")]
    pub status_message: String,
    /// Commit the status at least this often even when nothing changed, so its times stay
    /// fresh (such as `1h`; default: only when something changed).
    #[arg(long, value_parser = humantime::parse_duration, env = "LIFEBOAT_HEARTBEAT")]
    pub heartbeat: Option<std::time::Duration>,
    /// Do not commit the status (read-only Git credentials).
    #[arg(long, env = "LIFEBOAT_NO_STATUS")]
    pub no_status: bool,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub status: StatusArgs,
    /// Print the plan and change nothing (the same as `lifeboat plan`).
    #[arg(long, env = "LIFEBOAT_DRY_RUN")]
    pub dry_run: bool,
    /// Handle only shard I of N (0-based) of the mirror: the images whose mirror repository
    /// hashes to it, so N processes given 0/N to N-1/N share a pass with no coordination. A
    /// shard's pass is the mirror stage alone and publishes no status.
    #[arg(long, value_name = "I/N", env = "LIFEBOAT_SHARD")]
    pub shard: Option<crate::shard::Shard>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub status: StatusArgs,
    /// Address of the HTTP endpoints (/healthz, /readyz, /metrics, /trigger, /webhook).
    #[arg(long, default_value = "127.0.0.1:9477", env = "LIFEBOAT_LISTEN")]
    pub listen: std::net::SocketAddr,
    /// How often to fetch the desired state.
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration, env = "LIFEBOAT_POLL")]
    pub poll: std::time::Duration,
    /// File holding the bearer token that authorizes `POST /trigger`.
    #[arg(long, value_name = "FILE", env = "LIFEBOAT_TRIGGER_TOKEN_FILE")]
    pub trigger_token_file: Option<PathBuf>,
    /// File holding the secret of the Git push webhook (`POST /webhook`; GitHub
    /// X-Hub-Signature-256 or GitLab X-Gitlab-Token).
    #[arg(long, value_name = "FILE", env = "LIFEBOAT_WEBHOOK_SECRET_FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// On SIGTERM, how long running syncs may take to finish before they are stopped.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration, env = "LIFEBOAT_SHUTDOWN_TIMEOUT")]
    pub shutdown_timeout: std::time::Duration,
    /// Name of a Kubernetes Lease: with several replicas only its holder applies. Without it,
    /// Lifeboat runs alone and needs no Kubernetes.
    #[arg(long, env = "LIFEBOAT_LEASE")]
    pub lease: Option<String>,
    /// Namespace of the Lease (default: the pod's namespace, from POD_NAMESPACE, else
    /// `lifeboat`).
    #[arg(long, env = "LIFEBOAT_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// A folder on the mirror registry's storage filesystem, for the storage metrics.
    #[arg(long, value_name = "DIR", env = "LIFEBOAT_STORAGE_PATH")]
    pub storage_path: Option<PathBuf>,
    #[command(flatten)]
    pub signing: SigningArgs,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Folder holding the desired-state YAML files.
    #[arg(default_value = ".", env = "LIFEBOAT_DIR")]
    pub path: PathBuf,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Git repository holding the desired state, as for every command; `diff` reads a local one
    /// (work tree, bare repository, or any folder inside one), never a remote URL.
    #[arg(id = "url", long = "repo", value_name = "PATH", default_value = ".", env = "LIFEBOAT_REPO")]
    pub repo: PathBuf,
    /// Revision before the change, such as `origin/main` or `HEAD~1`.
    #[arg(long, env = "LIFEBOAT_BASE")]
    pub base: String,
    /// Revision after the change.
    #[arg(long, default_value = "HEAD", env = "LIFEBOAT_HEAD")]
    pub head: String,
    /// Folder of the desired state inside the repository (default: the whole repository).
    #[arg(id = "subdir", long = "path", value_name = "DIR", env = "LIFEBOAT_PATH")]
    pub path: Option<String>,
}
