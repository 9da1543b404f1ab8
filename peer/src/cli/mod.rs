//! The `ossc` command line: what each subcommand does, between its parsed
//! flags and the library rooms. `src/bin/ossc.rs` only parses and dispatches.
//!
//! Design decision: this is the top room. It may import every other room
//! (the agent, the peer layer, the object sources); none of them imports it.
//! Whoever starts an agent here also picks where its objects come from (the
//! store, or the peer layer), so the agent never learns about the peer layer.

pub mod agent_cli;
pub mod agent_client;
pub mod agent_requests;
pub mod cli_support;
pub mod demo;
pub mod download;
pub mod exit_code;
pub mod model_files;
pub mod node;
pub mod peer_daemon;
pub mod peer_layer;
pub mod secret_cli;
