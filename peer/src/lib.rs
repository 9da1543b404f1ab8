//! `ossc-peer`: the node agent, the peer layer and the `ossc` command-line tool.
//!
//! The rooms and which way they may import (docs/architecture.md, "Map of the
//! house"; `tests/house_map.rs` fails on a back-edge): [`cli`] on top may use
//! every room; [`agent`] and [`swarm`] sit side by side and never name each
//! other; both stand on [`object_source`], which names neither.

pub mod agent;
pub mod cli;
#[doc(hidden)]
pub mod fuzzing;
pub mod model_reader;
pub mod object_source;
pub mod prometheus;
pub mod safe_dir;
pub mod swarm;
pub mod synthetic_model;
