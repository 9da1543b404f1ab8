//! `ossc agent`: builds the node agent from the vendor's config file and
//! `OSS_*` environment, sets up its log file, and runs it.

use std::time::Duration;

use anyhow::Result;
use ossc_core::config::{ConnectorConfig, StoreEnv};

use crate::agent::run_agent;
use crate::cli::node::{self, NodeArgs};
use crate::cli::{cli_support, peer_layer};

#[derive(clap::Args, Debug)]
pub struct AgentArgs {
    /// Long-lived node daemon: never exit for lack of clients.
    #[arg(long)]
    pub daemon: bool,
    #[command(flatten)]
    pub node: NodeArgs,
}

pub fn run(args: AgentArgs) -> Result<()> {
    let log_stderr = args.node.log_stderr;
    node::run_with_config("ossc agent", "agent stopped", false, log_stderr, |config| {
        build_and_run(args, config)
    })
}

fn build_and_run(args: AgentArgs, config: ConnectorConfig) -> Result<()> {
    let settings = cli_support::store_settings(&config, args.node.oss_path.as_deref())?;
    // Peer layer (OSS_CONNECTOR_PEERS …): a configuration error stops the
    // agent here, before any socket exists, with the reason in the log.
    let swarm = crate::swarm::SwarmConfig::resolve(&|k| std::env::var(k).ok(), &config.peer)?;
    let model_dir = args.node.model_dir(&StoreEnv::from_process_env())?;
    let socket = args.node.socket();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ossc-agent")
        .build()?;
    runtime.block_on(async {
        node::spawn_metrics(args.node.metrics_listen, &socket);
        let mut opts = node::agent_options(
            &config,
            &settings,
            &socket,
            &model_dir,
            Duration::from_secs(config.expire_time_sec),
        )?;
        opts.idle_exit = !args.daemon;
        peer_layer::install(&mut opts, swarm);
        tracing::info!(
            socket = %socket.display(),
            model_dir = %model_dir.display(),
            bucket = %settings.bucket,
            prefix = %settings.prefix,
            endpoint = %settings.endpoint,
            signature = ?settings.signature_version,
            in_flight = config.max_in_flight(),
            "node agent starting"
        );
        run_agent(opts).await
    })
}
