//! What is being loaded and who owns what: files split into 16 MiB chunks
//! (the peer layer's `chunk_range`), chunks into pieces (the simulator's
//! unit of cut-through), and each chunk's owners in rendezvous order.
//!
//! Design decisions:
//! - **Ownership is the peer layer's**, hash for hash: the weight of a node
//!   for a chunk is the first 8 bytes of SHA-256(node "\n" bucket "\n" key
//!   "\n" etag "\n" size "\n" index "\n") (`peer/src/swarm/ring.rs`), node ids
//!   are `ip:port` as in the netns harness, and the ETag of each file is
//!   drawn from the seed (the measured runs had per-run ETags and cluster
//!   addresses, so their placement is one draw of the same distribution).
//! - Per chunk only the [`TOP`] highest-weight nodes are kept (the owner
//!   and its successors when owners are excluded or not yet visible); the
//!   full order is computed on demand, which only a view missing all of
//!   them needs.
//! - Pieces never straddle a store part (pieces divide the 8 MiB part), so a
//!   piece lands when the part streaming it reaches the piece's end.

use std::ops::Range;

use sha2::{Digest, Sha256};

use super::rng::Rng;

/// Highest-weight nodes remembered per chunk.
pub const TOP: usize = 8;
/// The netns harness's bucket and the generated model's key prefix.
const BUCKET: &str = "models";
const PREFIX: &str = "m1";
/// The agent's peer port.
const PEER_PORT: u16 = 7468;

#[derive(Debug, Clone)]
pub struct FileSpan {
    pub size: u64,
    pub chunks: Range<usize>,
}

#[derive(Debug, Clone)]
pub struct ChunkSpan {
    pub file: usize,
    pub index: u64,
    /// Bytes of the chunk.
    pub len: u64,
    pub pieces: Range<usize>,
}

/// Files → chunks → pieces, with global chunk and piece indices.
#[derive(Debug, Clone)]
pub struct Layout {
    pub files: Vec<FileSpan>,
    pub chunks: Vec<ChunkSpan>,
    /// Length of each piece.
    pub piece_len: Vec<u64>,
    /// The chunk of each piece.
    pub piece_chunk: Vec<u32>,
    pub chunk_size: u64,
    pub piece_size: u64,
}

impl Layout {
    /// `piece_size` must divide `part_size`, which must divide `chunk_size`.
    pub fn new(file_sizes: &[u64], chunk_size: u64, part_size: u64, piece_size: u64) -> Layout {
        assert!(
            chunk_size.is_multiple_of(part_size) && part_size.is_multiple_of(piece_size),
            "pieces divide store parts, parts divide chunks"
        );
        let mut files = Vec::new();
        let mut chunks = Vec::new();
        let mut piece_len = Vec::new();
        let mut piece_chunk = Vec::new();
        for (f, &size) in file_sizes.iter().enumerate() {
            let first = chunks.len();
            let mut index = 0;
            while index * chunk_size < size {
                let len = chunk_size.min(size - index * chunk_size);
                let p0 = piece_len.len();
                let mut off = 0;
                while off < len {
                    piece_len.push(piece_size.min(len - off));
                    piece_chunk.push(chunks.len() as u32);
                    off += piece_size;
                }
                chunks.push(ChunkSpan {
                    file: f,
                    index,
                    len,
                    pieces: p0..piece_len.len(),
                });
                index += 1;
            }
            files.push(FileSpan {
                size,
                chunks: first..chunks.len(),
            });
        }
        Layout {
            files,
            chunks,
            piece_len,
            piece_chunk,
            chunk_size,
            piece_size,
        }
    }

    pub fn model_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    pub fn pieces(&self) -> usize {
        self.piece_len.len()
    }
}

/// The id a node's peers know it by (`ip:port`, the harness's addressing).
pub fn node_id(cluster: u8, i: usize) -> String {
    if i < 240 {
        format!("10.231.{cluster}.{}:{PEER_PORT}", 10 + i)
    } else {
        format!("10.{cluster}.{}.{}:{PEER_PORT}", i / 250, 10 + i % 250)
    }
}

/// The object key of file `f` of `n` (the generated model's shard names).
fn key(f: usize, n: usize) -> String {
    format!("{PREFIX}/model-{:05}-of-{:05}.safetensors", f + 1, n)
}

/// The peer layer's rendezvous weight of `node` for a chunk.
pub fn weight(node: &str, key: &str, etag: &str, size: u64, index: u64) -> u64 {
    let mut h = Sha256::new();
    for part in [
        node.as_bytes(),
        BUCKET.as_bytes(),
        key.as_bytes(),
        etag.as_bytes(),
        size.to_string().as_bytes(),
        index.to_string().as_bytes(),
    ] {
        h.update(part);
        h.update(b"\n");
    }
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().expect("SHA-256 has 32 bytes"))
}

/// Each chunk's nodes in descending rendezvous weight (the first is the
/// owner over the full set).
#[derive(Debug, Clone)]
pub struct Ranking {
    nodes: Vec<String>,
    keys: Vec<(String, String, u64)>,
    top: Vec<Vec<u32>>,
}

impl Ranking {
    /// The ring over `n` nodes with addresses and ETags drawn from `rng`.
    pub fn hashed(layout: &Layout, n: usize, rng: &mut Rng) -> Ranking {
        let cluster = rng.below(256) as u8;
        let nodes: Vec<String> = (0..n).map(|i| node_id(cluster, i)).collect();
        let keys: Vec<(String, String, u64)> = layout
            .files
            .iter()
            .enumerate()
            .map(|(f, span)| {
                let etag = format!("\"{:016X}{:016X}-1\"", rng.next_u64(), rng.next_u64());
                (key(f, layout.files.len()), etag, span.size)
            })
            .collect();
        let mut r = Ranking {
            nodes,
            keys,
            top: Vec::with_capacity(layout.chunks.len()),
        };
        for c in 0..layout.chunks.len() {
            let order = r.full_order(layout, c);
            r.top.push(order.into_iter().take(TOP).collect());
        }
        r
    }

    /// A ring with given orders (tests: `orders[c]` is chunk c's owner
    /// order).
    pub fn fixed(orders: Vec<Vec<u32>>) -> Ranking {
        Ranking {
            nodes: Vec::new(),
            keys: Vec::new(),
            top: orders,
        }
    }

    /// Every node for chunk `c`, highest weight first.
    pub fn full_order(&self, layout: &Layout, c: usize) -> Vec<u32> {
        if self.nodes.is_empty() {
            return self.top[c].clone();
        }
        let span = &layout.chunks[c];
        let (key, etag, size) = &self.keys[span.file];
        let mut w: Vec<(u64, &str, u32)> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, id)| {
                (
                    weight(id, key, etag, *size, span.index),
                    id.as_str(),
                    i as u32,
                )
            })
            .collect();
        // Ties broken by the larger id, as `ring::owner` does.
        w.sort_unstable_by(|a, b| (b.0, b.1).cmp(&(a.0, a.1)));
        w.into_iter().map(|(_, _, i)| i).collect()
    }

    /// The highest-weight nodes of chunk `c`.
    pub fn top(&self, c: usize) -> &[u32] {
        &self.top[c]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ossc_peer::swarm::chunk_book::{ChunkId, ObjectVersion};

    const MIB: u64 = 1 << 20;

    #[test]
    fn chunks_and_pieces_cover_every_byte() {
        let l = Layout::new(&[40 * MIB + 5, 16 * MIB], 16 * MIB, 8 * MIB, 4 * MIB);
        assert_eq!(l.chunks.len(), 4);
        assert_eq!(l.chunks[2].len, 8 * MIB + 5);
        assert_eq!(l.files[1].chunks, 3..4);
        assert_eq!(l.piece_len.iter().sum::<u64>(), l.model_bytes());
        assert_eq!(l.chunks[2].pieces.len(), 3);
        assert_eq!(l.piece_len[l.chunks[2].pieces.end - 1], 5);
    }

    #[test]
    fn weights_and_owners_are_the_peer_layers() {
        let id = ChunkId {
            object: ObjectVersion {
                bucket: BUCKET.into(),
                key: key(0, 4),
                etag: "\"E-1\"".into(),
                size: 67_633_400,
            },
            index: 3,
        };
        let node = node_id(7, 2);
        assert_eq!(
            weight(&node, &id.object.key, "\"E-1\"", 67_633_400, 3),
            ossc_peer::swarm::ring::weight(&node, &id)
        );
        let layout = Layout::new(&[67_633_400, 1 << 30], 16 * MIB, 8 * MIB, 8 * MIB);
        let r = Ranking::hashed(&layout, 12, &mut Rng::new(1));
        for c in [0, 3, 40] {
            let span = &layout.chunks[c];
            let (k, etag, size) = &r.keys[span.file];
            let chunk = ChunkId {
                object: ObjectVersion {
                    bucket: BUCKET.into(),
                    key: k.clone(),
                    etag: etag.clone(),
                    size: *size,
                },
                index: span.index,
            };
            let owner = ossc_peer::swarm::ring::owner(r.nodes.iter().map(String::as_str), &chunk);
            assert_eq!(owner, Some(r.nodes[r.top(c)[0] as usize].as_str()));
            assert_eq!(r.full_order(&layout, c)[..TOP], *r.top(c));
        }
    }
}
