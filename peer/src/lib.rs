//! `ossc-peer`: the node agent, the peer layer and the `ossc` command-line tool.

pub mod agent;
pub mod agent_cli;
pub mod agent_client;
pub mod cli_support;
pub mod demo;
pub mod download;
pub mod exit_code;
#[doc(hidden)]
pub mod fuzzing;
pub mod model_reader;
pub mod object_source;
pub mod peer_daemon;
pub mod prometheus;
pub mod safe_dir;
pub mod secret_cli;
pub mod swarm;
pub mod synthetic_model;
