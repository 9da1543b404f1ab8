//! Chunk ownership: rendezvous (highest-random-weight) hashing over the alive
//! peers.
//!
//! Design decision: rendezvous hashing written here (~20 lines) instead of a
//! ring crate (`hashring`, `consistent_hash`, checked with `cargo info`).
//! Every node must compute the same owner for the same chunk, across builds
//! and toolchains, so the hash is SHA-256 (a fixed specification) rather than a
//! crate's `std::hash::Hash`-based hasher; and with 2 to a few hundred nodes
//! rendezvous hashing is evenly balanced without tuning virtual nodes, while
//! keeping the consistent-hashing property: when a node dies, only its chunks
//! move, each to the node with the next-highest weight. The cost is
//! O(peers) hashes per chunk, negligible next to 16 MiB of data.

use sha2::{Digest, Sha256};

use super::chunk_book::ChunkId;

/// The weight of `node` for `chunk`: the first 8 bytes of
/// SHA-256(node "\n" bucket "\n" key "\n" etag "\n" size "\n" index).
pub fn weight(node: &str, chunk: &ChunkId) -> u64 {
    let mut h = Sha256::new();
    for part in [
        node.as_bytes(),
        chunk.object.bucket.as_bytes(),
        chunk.object.key.as_bytes(),
        chunk.object.etag.as_bytes(),
        chunk.object.size.to_string().as_bytes(),
        chunk.index.to_string().as_bytes(),
    ] {
        h.update(part);
        h.update(b"\n");
    }
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().expect("SHA-256 has 32 bytes"))
}

/// The owner of `chunk` among `nodes` (ties broken by the larger id), or
/// `None` for an empty set.
pub fn owner<'a>(nodes: impl IntoIterator<Item = &'a str>, chunk: &ChunkId) -> Option<&'a str> {
    nodes
        .into_iter()
        .map(|n| (weight(n, chunk), n))
        .max()
        .map(|(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swarm::chunk_book::ObjectVersion;

    fn chunk(i: u64) -> ChunkId {
        ChunkId {
            object: ObjectVersion {
                bucket: "b".into(),
                key: "m/model-00001.safetensors".into(),
                etag: "e".into(),
                size: 1 << 34,
            },
            index: i,
        }
    }

    #[test]
    fn ownership_is_balanced_and_only_a_dead_nodes_chunks_move() {
        let nodes = [
            "10.0.0.1:7468",
            "10.0.0.2:7468",
            "10.0.0.3:7468",
            "10.0.0.4:7468",
        ];
        let n = 4000u64;
        let owners: Vec<&str> = (0..n).map(|i| owner(nodes, &chunk(i)).unwrap()).collect();
        for node in nodes {
            let mine = owners.iter().filter(|o| **o == node).count() as f64;
            let share = mine / n as f64;
            assert!((0.2..0.3).contains(&share), "{node}: {share}");
        }
        let survivors = &nodes[..3];
        for (i, before) in owners.iter().enumerate() {
            let after = owner(survivors.iter().copied(), &chunk(i as u64)).unwrap();
            if *before != nodes[3] {
                assert_eq!(after, *before, "chunk {i} moved needlessly");
            } else {
                assert_ne!(after, nodes[3]);
            }
        }
        assert_eq!(owner(std::iter::empty(), &chunk(0)), None);
        // Deterministic: the same answer every time (no per-process seed).
        assert_eq!(weight("a", &chunk(1)), weight("a", &chunk(1)));
        assert_ne!(weight("a", &chunk(1)), weight("a", &chunk(2)));
    }
}
