//! Which chunks of which object versions this node holds, for serving peers.
//!
//! Design decision: one [`ChunkBook`] per object version being fetched or
//! held: the chunk size, one `Option<crc64>` per chunk (the bitmap and the
//! per-chunk CRC-64 in one), and a *weak* reference to the object's target
//! (the memfd). Weak, because the cache decides when memory is released (it
//! counts strong references to the memfd); once it lets go, the book can no
//! longer be read and is pruned on the next lookup. Waiters (a peer's
//! FetchChunk that arrived before the chunk) sleep on a `watch` that every
//! recorded chunk bumps.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::watch;
use tokio::time::Instant;

use crate::agent::fetcher::ChunkTarget;

/// One object version: peers only exchange data for identical versions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectVersion {
    pub bucket: String,
    pub key: String,
    pub etag: String,
    pub size: u64,
}

/// Chunk `index` of an object version: bytes
/// `[index × chunk_size, min(size, (index + 1) × chunk_size))`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChunkId {
    pub object: ObjectVersion,
    pub index: u64,
}

/// Bytes `[i × chunk_size, min(size, (i+1) × chunk_size))`.
pub fn chunk_range(size: u64, chunk_size: u64, index: u64) -> Range<u64> {
    let start = index.saturating_mul(chunk_size).min(size);
    start..start.saturating_add(chunk_size).min(size)
}

/// Chunks of one object version held (or being fetched) by this node.
pub struct ChunkBook {
    pub version: ObjectVersion,
    pub chunk_size: u64,
    target: Weak<dyn ChunkTarget>,
    /// Per chunk: its CRC-64 once held.
    held: Mutex<Vec<Option<u64>>>,
    closed: AtomicBool,
    changed: watch::Sender<u64>,
}

impl ChunkBook {
    pub fn new(
        version: ObjectVersion,
        chunk_size: u64,
        target: &Arc<dyn ChunkTarget>,
    ) -> ChunkBook {
        let chunk_size = chunk_size.max(1);
        let n = version.size.div_ceil(chunk_size) as usize;
        ChunkBook {
            version,
            chunk_size,
            target: Arc::downgrade(target),
            held: Mutex::new(vec![None; n]),
            closed: AtomicBool::new(false),
            changed: watch::channel(0).0,
        }
    }

    pub fn n_chunks(&self) -> u64 {
        self.version.size.div_ceil(self.chunk_size)
    }

    pub fn range(&self, index: u64) -> Range<u64> {
        chunk_range(self.version.size, self.chunk_size, index)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Option<u64>>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Chunk `index` is in the target with CRC-64 `crc`: peers may have it.
    pub fn record(&self, index: u64, crc: u64) {
        if let Some(slot) = self.lock().get_mut(index as usize) {
            *slot = Some(crc);
        }
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Stop serving chunk `index` (it is about to be rewritten).
    pub fn forget(&self, index: u64) {
        if let Some(slot) = self.lock().get_mut(index as usize) {
            *slot = None;
        }
    }

    pub fn held(&self, index: u64) -> Option<u64> {
        self.lock().get(index as usize).copied().flatten()
    }

    pub fn held_count(&self) -> usize {
        self.lock().iter().filter(|c| c.is_some()).count()
    }

    /// No more chunks will arrive (the fetch failed or was replaced).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Readable: not closed and the target still alive.
    pub fn is_live(&self) -> bool {
        !self.closed.load(Ordering::Acquire) && self.target.strong_count() > 0
    }

    /// Waits until chunk `index` is held (its CRC), the book closes, or `until`.
    pub async fn wait_for(&self, index: u64, until: Instant) -> Option<u64> {
        let mut rx = self.changed.subscribe();
        loop {
            if let Some(crc) = self.held(index) {
                return Some(crc);
            }
            if !self.is_live() {
                return None;
            }
            match tokio::time::timeout_at(until, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return self.held(index),
            }
        }
    }

    /// `pread` from the target; an error once the cache released it.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let target = self
            .target
            .upgrade()
            .ok_or_else(|| std::io::Error::other("object released from memory"))?;
        target.read_at(offset, buf)
    }
}

/// All books of this node, by object version.
#[derive(Default)]
pub struct BookRegistry {
    books: Mutex<HashMap<ObjectVersion, Arc<ChunkBook>>>,
    added: watch::Sender<u64>,
}

impl BookRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectVersion, Arc<ChunkBook>>> {
        self.books.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new book for `version` (replacing and closing an old one).
    pub fn open(
        &self,
        version: ObjectVersion,
        chunk_size: u64,
        target: &Arc<dyn ChunkTarget>,
    ) -> Arc<ChunkBook> {
        let book = Arc::new(ChunkBook::new(version.clone(), chunk_size, target));
        let old = self.lock().insert(version, book.clone());
        if let Some(old) = old {
            old.close();
        }
        self.added.send_modify(|v| *v = v.wrapping_add(1));
        book
    }

    /// Removes `book` (if it is still the registered one) and closes it.
    pub fn remove(&self, book: &Arc<ChunkBook>) {
        let mut books = self.lock();
        if books
            .get(&book.version)
            .is_some_and(|b| Arc::ptr_eq(b, book))
        {
            books.remove(&book.version);
        }
        drop(books);
        book.close();
    }

    /// The live book of `version`, pruning dead ones.
    pub fn get(&self, version: &ObjectVersion) -> Option<Arc<ChunkBook>> {
        let mut books = self.lock();
        books.retain(|_, b| b.is_live());
        books.get(version).cloned()
    }

    /// Waits until a live book for `version` exists, or `until`.
    pub async fn wait_get(
        &self,
        version: &ObjectVersion,
        until: Instant,
    ) -> Option<Arc<ChunkBook>> {
        let mut rx = self.added.subscribe();
        loop {
            if let Some(b) = self.get(version) {
                return Some(b);
            }
            if tokio::time::timeout_at(until, rx.changed()).await.is_err() {
                return self.get(version);
            }
        }
    }

    pub fn len(&self) -> usize {
        let mut books = self.lock();
        books.retain(|_, b| b.is_live());
        books.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::fetcher::VecTarget;
    use std::time::Duration;

    fn version(size: u64) -> ObjectVersion {
        ObjectVersion {
            bucket: "b".into(),
            key: "k".into(),
            etag: "e".into(),
            size,
        }
    }

    #[test]
    fn ranges_cover_the_object() {
        assert_eq!(chunk_range(10, 4, 0), 0..4);
        assert_eq!(chunk_range(10, 4, 2), 8..10);
        assert_eq!(chunk_range(10, 4, 3), 10..10);
    }

    #[tokio::test]
    async fn waiters_see_recorded_chunks_and_books_die_with_their_target() {
        let reg = Arc::new(BookRegistry::default());
        let target: Arc<dyn ChunkTarget> = Arc::new(VecTarget::with_len(10));
        let v = version(10);
        let waiter = {
            let reg = reg.clone();
            let v = v.clone();
            tokio::spawn(async move {
                let until = Instant::now() + Duration::from_secs(5);
                let book = reg.wait_get(&v, until).await.unwrap();
                book.wait_for(1, until).await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let book = reg.open(v.clone(), 4, &target);
        assert_eq!(book.n_chunks(), 3);
        target.write_at(4, b"abcd").unwrap();
        book.record(1, 77);
        assert_eq!(waiter.await.unwrap(), Some(77));
        let mut buf = [0u8; 4];
        book.read(4, &mut buf).unwrap();
        assert_eq!(&buf, b"abcd");
        // A timed-out wait answers None.
        let soon = Instant::now() + Duration::from_millis(10);
        assert_eq!(book.wait_for(2, soon).await, None);
        assert_eq!(reg.len(), 1);
        drop(target);
        assert!(book.read(4, &mut buf).is_err());
        assert!(reg.get(&v).is_none());
        assert!(reg.is_empty());
    }
}
