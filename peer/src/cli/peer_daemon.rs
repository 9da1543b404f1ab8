//! `ossc peer`: the node agent as a standalone, long-lived node daemon (the
//! standalone peer mode) — for a Kubernetes DaemonSet or a systemd unit.
//!
//! It mirrors and prefetches `OSS_PATH` into MODEL_DIR at start, serves its
//! peers (the peer layer, configured by flags or the usual `OSS_CONNECTOR_*`
//! environment and config file), and never exits for lack of clients.
//! Applications on the node attach to its socket with `ENABLE_CONNECTOR=2`
//! (and the same `MODEL_DIR` and `CONNECTOR_UDS_PATH`); they need no store
//! credentials of their own.
//!
//! Design decision: this is `ossc agent --daemon` plus flags, not a second
//! agent: the same [`run_agent`] with `idle_exit = false`, so the socket
//! protocol, cache, peer layer and STATUS are identical in both modes. Flags
//! win over the environment, which wins over the config file. The cluster
//! secret is never a flag (a command line is visible to every user through
//! `ps`): it comes from `OSS_CONNECTOR_CLUSTER_SECRET` or a file
//! (`--secret-file` / `peer.secretFile`). Memory is kept for
//! `--expire-time-sec` after a file's last use (default `expireTimeSec`);
//! `0` keeps prefetched files until the daemon stops, which suits a daemon
//! whose whole job is to hold one model for the node.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use ossc_core::config::{ConnectorConfig, StoreEnv};

use crate::agent::run_agent;
use crate::cli::node::{self, NodeArgs};
use crate::cli::{cli_support, peer_layer};
use crate::swarm::{env as peer_env, SwarmConfig};

/// What `--expire-time-sec 0` means: far beyond any uptime (the cache's
/// expiry then never finds a file old enough).
pub const NEVER_EXPIRE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

#[derive(clap::Args, Debug, Default)]
#[command(
    mut_arg("socket", |a| a.help(
        "The daemon's socket, where applications attach (default: \
         CONNECTOR_UDS_PATH or /tmp/oss-connector/connector.sock)"
    )),
    mut_arg("oss_path", |a| a.help("The model to prefetch and serve (overrides OSS_PATH)")),
    mut_arg("model_dir", |a| a.help("Where the model is mirrored (overrides MODEL_DIR)")),
)]
pub struct PeerArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// Peers: comma-separated host:port of every node's daemon, this one
    /// included, or one DNS name:port resolving to all (overrides
    /// OSS_CONNECTOR_PEERS).
    #[arg(long)]
    pub peers: Option<String>,
    /// Where to serve peers, ip:port (overrides OSS_CONNECTOR_PEER_LISTEN).
    #[arg(long)]
    pub listen: Option<String>,
    /// The address peers know this node by (overrides
    /// OSS_CONNECTOR_PEER_ADVERTISE).
    #[arg(long)]
    pub advertise: Option<String>,
    /// File holding the cluster secret (overrides OSS_CONNECTOR_CLUSTER_SECRET
    /// and peer.secretFile).
    #[arg(long)]
    pub secret_file: Option<PathBuf>,
    /// Seconds a file stays in memory after its last use (default:
    /// expireTimeSec); 0 keeps files until the daemon stops.
    #[arg(long)]
    pub expire_time_sec: Option<u64>,
}

/// Runs the daemon until SIGTERM / SIGINT.
pub fn run(args: PeerArgs) -> Result<()> {
    let log_stderr = args.node.log_stderr;
    node::run_with_config(
        "ossc peer",
        "peer daemon stopped",
        true,
        log_stderr,
        |config| build_and_run(args, config),
    )
}

/// The peer layer's settings: flags over `lookup` (the environment) over the
/// config file.
pub fn swarm_config(
    args: &PeerArgs,
    lookup: &dyn Fn(&str) -> Option<String>,
    file: &ossc_core::config::PeerConfig,
) -> Result<Option<SwarmConfig>> {
    let mut file = file.clone();
    if let Some(path) = &args.secret_file {
        file.secret_file = Some(path.clone());
    }
    let flag = |k: &str| -> Option<String> {
        match k {
            peer_env::PEERS => args.peers.clone(),
            peer_env::LISTEN => args.listen.clone(),
            peer_env::ADVERTISE => args.advertise.clone(),
            _ => None,
        }
    };
    let merged = |k: &str| -> Option<String> {
        if k == peer_env::SECRET && args.secret_file.is_some() {
            return None;
        }
        flag(k).or_else(|| lookup(k))
    };
    Ok(SwarmConfig::resolve(&merged, &file)?)
}

fn build_and_run(args: PeerArgs, config: ConnectorConfig) -> Result<()> {
    let settings = cli_support::store_settings(&config, args.node.oss_path.as_deref())?;
    let swarm = swarm_config(&args, &|k| std::env::var(k).ok(), &config.peer)?;
    let model_dir = args.node.model_dir(&StoreEnv::from_process_env())?;
    let socket = args.node.socket();
    let expire = match args.expire_time_sec {
        Some(0) => NEVER_EXPIRE,
        Some(s) => Duration::from_secs(s),
        None => Duration::from_secs(config.expire_time_sec),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ossc-peer")
        .build()?;
    runtime.block_on(async {
        node::spawn_metrics(args.node.metrics_listen, &socket);
        let mut opts = node::agent_options(&config, &settings, &socket, &model_dir, expire)?;
        opts.idle_exit = false;
        if swarm.is_none() {
            tracing::warn!(
                "no peers configured (--peers / OSS_CONNECTOR_PEERS): this daemon serves only its own node"
            );
        }
        peer_layer::install(&mut opts, swarm);
        tracing::info!(
            socket = %socket.display(),
            model_dir = %model_dir.display(),
            bucket = %settings.bucket,
            prefix = %settings.prefix,
            endpoint = %settings.endpoint,
            expire_secs = expire.as_secs(),
            "peer daemon starting"
        );
        run_agent(opts).await
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        peer: PeerArgs,
    }

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn flags_win_over_the_environment() {
        let args = Cli::parse_from([
            "x",
            "--peers",
            "10.0.0.1:7468,10.0.0.2:7468",
            "--listen",
            "0.0.0.0:7000",
            "--advertise",
            "10.0.0.1:7468",
        ])
        .peer;
        let lookup = env(&[
            (peer_env::PEERS, "192.0.2.1:1"),
            (peer_env::LISTEN, "127.0.0.1:1"),
            (peer_env::SECRET, "Ev7Qp2Lm9Xr4Tb6Wz1Nc8Vd3Hs5Kf0Gj"),
        ]);
        let c = swarm_config(&args, &lookup, &Default::default())
            .unwrap()
            .unwrap();
        assert_eq!(c.peers, vec!["10.0.0.1:7468", "10.0.0.2:7468"]);
        assert_eq!(c.listen, "0.0.0.0:7000".parse().unwrap());
        assert_eq!(c.advertise.as_deref(), Some("10.0.0.1:7468"));
        // Without flags the environment applies.
        let c = swarm_config(&PeerArgs::default(), &lookup, &Default::default())
            .unwrap()
            .unwrap();
        assert_eq!(c.peers, vec!["192.0.2.1:1"]);
        assert_eq!(c.listen, "127.0.0.1:1".parse().unwrap());
    }

    #[test]
    fn the_secret_file_flag_wins_and_no_peers_means_no_peer_layer() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "Fo3Rx8Mq2Wp6Tz9Lb4Nv7Kc1Hd5Js0Ga\n").unwrap();
        let lookup = env(&[(peer_env::SECRET, "Ev7Qp2Lm9Xr4Tb6Wz1Nc8Vd3Hs5Kf0Gj")]);
        let with_file = PeerArgs {
            peers: Some("127.0.0.1:7468".into()),
            secret_file: Some(file.clone()),
            ..Default::default()
        };
        let from_file = swarm_config(&with_file, &lookup, &Default::default())
            .unwrap()
            .unwrap();
        let from_env = swarm_config(
            &PeerArgs {
                peers: Some("127.0.0.1:7468".into()),
                ..Default::default()
            },
            &lookup,
            &Default::default(),
        )
        .unwrap()
        .unwrap();
        // Which secret is in use: a tag signed with it verifies under it.
        let file_secret =
            crate::swarm::ClusterSecret::new(b"Fo3Rx8Mq2Wp6Tz9Lb4Nv7Kc1Hd5Js0Ga").unwrap();
        let verifies = |s: &crate::swarm::ClusterSecret| {
            let mut md = tonic::metadata::MetadataMap::new();
            s.sign(&mut md, "n", "/m", &[0; 32]);
            let nonces = crate::swarm::auth::NonceCache::default();
            file_secret.verify(&md, "/m", &[0; 32], &nonces).is_ok()
        };
        assert!(verifies(&from_file.secret));
        assert!(!verifies(&from_env.secret));
        // A missing secret file is an error naming the file.
        let missing = PeerArgs {
            peers: Some("127.0.0.1:7468".into()),
            secret_file: Some(dir.path().join("nope")),
            ..Default::default()
        };
        let e = swarm_config(&missing, &lookup, &Default::default()).unwrap_err();
        assert!(format!("{e:#}").contains("nope"), "{e:#}");
        // No peers anywhere: a single-node daemon.
        assert!(
            swarm_config(&PeerArgs::default(), &env(&[]), &Default::default())
                .unwrap()
                .is_none()
        );
    }
}
