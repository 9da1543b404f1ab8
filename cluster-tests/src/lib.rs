//! Cross-process and cross-host test support for ossc.
//!
//! - [`netns`]: real multi-host clusters from Linux network namespaces (a
//!   bridge in its own switch namespace, veth links with `tc tbf` caps).
//! - [`ossc_cluster`]: ossc on such a cluster — `ossc serve-store` on the store
//!   host, consumers under `libossc_preload.so` (and their node agents) on the
//!   node hosts, the store's egress counter.
//! - [`launch`]: the vendor's launch scenarios (Ray, SGLang-style multi-node)
//!   run through `deploy/examples/`, and checks of which processes carry the
//!   hook and which agent served them.
//! - [`swarm_sim`]: an event-level simulator of the peer layer at any N.
//! - [`testbed`]: what every cluster test shares (the serial lock, [`note!`],
//!   a model served on a fresh cluster).

// Two modules need `unsafe` for process set-up (`setns`, `kill`, `geteuid`, a `pre_exec`
// that drops root) and opt out with `#[allow(unsafe_code)]`; the rest stays safe code.
#![deny(unsafe_code)]

pub mod launch;
#[allow(unsafe_code)]
pub mod netns;
#[allow(unsafe_code)]
pub mod ossc_cluster;
pub mod swarm_sim;
pub mod testbed;
