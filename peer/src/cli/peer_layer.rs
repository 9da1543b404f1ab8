//! The peer layer as an agent's object source: a [`SwarmConfig`] is a
//! [`FetcherSpec`]. The agent starts it (chunk server, heartbeats) once it
//! holds its socket's lock, fetches through its `SwarmFetcher`, and stops it
//! through [`ObjectFetcher::shutdown`] when the agent exits, before the
//! socket is removed.

use std::sync::{Arc, Mutex};

use anyhow::Context;
use async_trait::async_trait;
use ossc_core::fetch::{FetchEngine, FetchProgress};
use ossc_core::object_client::{ObjectClientError, ObjectMeta};

use crate::object_source::{ChunkTarget, FetchOutcome, FetcherSpec, ObjectFetcher};
use crate::swarm::{Swarm, SwarmConfig};

/// The agent's fetcher for `config`: the peer layer when peers are configured
/// (logged), else `None` (the store alone).
pub fn fetcher_spec(config: Option<SwarmConfig>) -> Option<Box<dyn FetcherSpec>> {
    let config = config?;
    tracing::info!(
        peers = ?config.peers,
        listen = %config.listen,
        chunk_size = config.chunk_size,
        "peer layer configured"
    );
    Some(Box::new(config))
}

#[async_trait]
impl FetcherSpec for SwarmConfig {
    async fn start(
        self: Box<Self>,
        engine: Arc<FetchEngine>,
        bucket: String,
    ) -> anyhow::Result<Arc<dyn ObjectFetcher>> {
        let swarm = Swarm::start(*self, engine, bucket)
            .await
            .context("starting the peer layer")?;
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
