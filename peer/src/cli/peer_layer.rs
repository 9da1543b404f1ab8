//! The peer layer as an agent's object source: a [`SwarmConfig`] becomes a
//! [`FetcherSpec`]. The agent starts it (chunk server, heartbeats) once it
//! holds its socket's lock, fetches through its `SwarmFetcher`, and stops it
//! through [`ObjectFetcher::shutdown`] when the agent exits, before the
//! socket is removed.
//!
//! Design decision (start skew): the agent and the peer layer do not know
//! each other, so this is where they meet. When a peer asks for an object
//! version this node does not hold, the peer layer's unheld-object hook
//! (`crate::swarm::unheld`) asks the agent, through its
//! [`PrefetchHandle`], to prefetch that key if its mirror lists it with the
//! same ETag and size; the peer's pull then waits for the chunk instead of
//! going to the store.

use std::sync::{Arc, Mutex};

use anyhow::Context;
use async_trait::async_trait;
use ossc_core::fetch::{FetchEngine, FetchProgress};
use ossc_core::object_client::{ObjectClientError, ObjectMeta};

use crate::agent::{AgentOptions, PrefetchHandle};
use crate::object_source::{ChunkTarget, FetchOutcome, FetcherSpec, ObjectFetcher};
use crate::swarm::{ObjectVersion, Swarm, SwarmConfig};

/// Hands the agent of `opts` the peer layer when peers are configured
/// (logged), with a prefetch handle for start skew; else leaves `opts` as
/// is (the store alone).
pub fn install(opts: &mut AgentOptions, config: Option<SwarmConfig>) {
    let Some(config) = config else {
        return;
    };
    tracing::info!(
        peers = ?config.peers,
        listen = %config.listen,
        chunk_size = config.chunk_size,
        "peer layer configured"
    );
    let prefetch = PrefetchHandle::default();
    opts.prefetch_handle = Some(prefetch.clone());
    opts.fetcher = Some(Box::new(PeerLayerSpec {
        config,
        prefetch: Some(prefetch),
    }));
}

/// The peer layer before it starts, and the agent it prefetches through.
struct PeerLayerSpec {
    config: SwarmConfig,
    prefetch: Option<PrefetchHandle>,
}

/// The peer layer alone, with no agent to prefetch through (embedders,
/// tests): a version a peer asks for that this node does not hold is
/// declined.
#[async_trait]
impl FetcherSpec for SwarmConfig {
    async fn start(
        self: Box<Self>,
        engine: Arc<FetchEngine>,
        bucket: String,
    ) -> anyhow::Result<Arc<dyn ObjectFetcher>> {
        let spec = PeerLayerSpec {
            config: *self,
            prefetch: None,
        };
        Box::new(spec).start(engine, bucket).await
    }
}

#[async_trait]
impl FetcherSpec for PeerLayerSpec {
    async fn start(
        self: Box<Self>,
        engine: Arc<FetchEngine>,
        bucket: String,
    ) -> anyhow::Result<Arc<dyn ObjectFetcher>> {
        let PeerLayerSpec { config, prefetch } = *self;
        let swarm = Swarm::start(config, engine, bucket.clone())
            .await
            .context("starting the peer layer")?;
        if let Some(prefetch) = prefetch {
            swarm.on_unheld_object(Arc::new(move |v: &ObjectVersion| {
                v.bucket == bucket && prefetch.prefetch_object(&v.key, &v.etag, v.size)
            }));
        }
        Ok(Arc::new(RunningSwarm {
            fetcher: swarm.fetcher(),
            swarm: Mutex::new(Some(swarm)),
        }))
    }
}

/// A started peer layer: its fetcher, and the swarm to stop at shutdown.
struct RunningSwarm {
    fetcher: Arc<dyn ObjectFetcher>,
    swarm: Mutex<Option<Swarm>>,
}

#[async_trait]
impl ObjectFetcher for RunningSwarm {
    async fn fetch(
        &self,
        meta: &ObjectMeta,
        target: Arc<dyn ChunkTarget>,
        progress: Arc<FetchProgress>,
    ) -> Result<FetchOutcome, ObjectClientError> {
        self.fetcher.fetch(meta, target, progress).await
    }

    fn status(&self) -> Option<serde_json::Value> {
        match &*self.swarm.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(swarm) => swarm.status(),
            None => self.fetcher.status(),
        }
    }

    async fn shutdown(&self) {
        let swarm = self.swarm.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(swarm) = swarm {
            // Announced: peers stop choosing this node at once, the pulls
            // they have in flight finish (up to `peer.leaveGraceSec`), then
            // gossip drops it instead of after the detection delay.
            swarm.leave().await;
        }
    }
}
