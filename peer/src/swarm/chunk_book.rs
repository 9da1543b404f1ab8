//! Which chunks of which object versions this node holds, for serving peers.
//!
//! Design decisions:
//! - One [`ChunkBook`] per object version being fetched or held: the chunk
//!   size, one [`ChunkSlot`] per chunk, and a *weak* reference to the
//!   object's target (the memfd). Weak, because the cache decides when memory
//!   is released (it counts strong references to the memfd); once it lets
//!   go, the book can no longer be read and is pruned on the next lookup.
//! - **Cut-through and relay.** A slot knows the chunk's CRC-64 once the
//!   chunk is complete and verified (`held`), and, while it is still
//!   arriving, how many bytes from the chunk's start are already in the
//!   target (`prefix`). Every download of a chunk, from the store *or from a
//!   peer*, writes through a [`RecordingSink`], which advances the prefix as
//!   bytes land, so the chunk server streams a chunk to peers *while* it
//!   arrives instead of after it completed (store-then-forward cost ≈
//!   (N−1)/N · M/B extra on an N-node load), and a node relays what it is
//!   still pulling. Bytes pulled from a peer are unverified until the
//!   chunk's CRC-64 matches: a relay may forward them, but the trailing CRC
//!   goes out only once `held` is set, which happens only after this node's
//!   own copy verified, so a receiver never keeps bytes the relay did not
//!   verify.
//! - **Generations.** A chunk whose download failed (or that is refetched
//!   after an end-to-end mismatch) is *forgotten*: its prefix drops to 0 and
//!   its `generation` grows. A stream of that chunk sees the generation change
//!   and fails instead of going on with bytes from another download, so a
//!   relay's failed pull costs its downstream a re-pull, never a wrong byte.
//! - `receiving` marks a chunk whose download has begun (before its first
//!   byte): `Have` reports it, so pullers know which nodes relay which chunk.
//! - Waiters (a peer's FetchChunk for a chunk not yet arrived) sleep on the
//!   slot's own `watch`, so progress on one chunk wakes only its readers, and
//!   only every [`PROGRESS_NOTIFY_BYTES`].

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use ossc_core::object_client::RangeSink;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::object_source::ChunkTarget;

/// Readers of a chunk still arriving are woken when its prefix has grown by
/// this much (a quarter of the chunk if that is less) or the chunk
/// completed: 256 KiB, a quarter of a served frame,
/// so a reader never waits long for a full frame while a 1 GB object's
/// writes (~16–64 KiB each) cost a few thousand wake-ups, not hundreds of
/// thousands.
pub const PROGRESS_NOTIFY_BYTES: u64 = 256 << 10;

/// One object version: peers only exchange data for identical versions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectVersion {
    pub bucket: String,
    pub key: String,
    pub etag: String,
    pub size: u64,
}

impl From<&ossc_proto::v1::ObjectVersion> for ObjectVersion {
    fn from(o: &ossc_proto::v1::ObjectVersion) -> ObjectVersion {
        ObjectVersion {
            bucket: o.bucket.clone(),
            key: o.key.clone(),
            etag: o.etag.clone(),
            size: o.size,
        }
    }
}

impl From<&ObjectVersion> for ossc_proto::v1::ObjectVersion {
    fn from(v: &ObjectVersion) -> ossc_proto::v1::ObjectVersion {
        ossc_proto::v1::ObjectVersion {
            bucket: v.bucket.clone(),
            key: v.key.clone(),
            etag: v.etag.clone(),
            size: v.size,
        }
    }
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

/// What readers of one chunk see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SlotState {
    /// The chunk's CRC-64 once it is complete and verified.
    pub held: Option<u64>,
    /// Bytes from the chunk's start already in the target (the chunk's
    /// length once held).
    pub prefix: u64,
    /// A download of the chunk (store or peer) has begun and not ended.
    pub receiving: bool,
    /// Grows each time the chunk is forgotten: bytes read under one
    /// generation belong to one download.
    pub generation: u64,
}

/// One chunk's state: what readers see, and the written ranges behind it.
struct ChunkSlot {
    state: watch::Sender<SlotState>,
    /// Written ranges relative to the chunk start, sorted and disjoint
    /// (a chunk's store parts arrive side by side).
    written: Mutex<Vec<Range<u64>>>,
}

/// Chunks of one object version held (or being fetched) by this node.
pub struct ChunkBook {
    pub version: ObjectVersion,
    pub chunk_size: u64,
    target: Weak<dyn ChunkTarget>,
    slots: Vec<ChunkSlot>,
    closed: AtomicBool,
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
            slots: (0..n)
                .map(|_| ChunkSlot {
                    state: watch::channel(SlotState::default()).0,
                    written: Mutex::new(Vec::new()),
                })
                .collect(),
            closed: AtomicBool::new(false),
        }
    }

    pub fn n_chunks(&self) -> u64 {
        self.slots.len() as u64
    }

    pub fn range(&self, index: u64) -> Range<u64> {
        chunk_range(self.version.size, self.chunk_size, index)
    }

    fn slot(&self, index: u64) -> Option<&ChunkSlot> {
        self.slots.get(usize::try_from(index).ok()?)
    }

    /// Chunk `index` is in the target with CRC-64 `crc`: peers may have it.
    pub fn record(&self, index: u64, crc: u64) {
        let len = self.range(index).end - self.range(index).start;
        if let Some(slot) = self.slot(index) {
            slot.state.send_modify(|s| {
                s.held = Some(crc);
                s.prefix = len;
                s.receiving = false;
            });
        }
    }

    /// A download of chunk `index` begins: peers may ask this node for it
    /// (it relays the chunk as it arrives).
    pub fn begin(&self, index: u64) {
        if let Some(slot) = self.slot(index) {
            slot.state.send_if_modified(|s| {
                let begins = s.held.is_none() && !s.receiving;
                s.receiving |= begins;
                begins
            });
        }
    }

    /// Stop serving chunk `index` (its download failed, or it is about to be
    /// rewritten): the prefix drops to 0 and the generation grows, so every
    /// stream of it fails (see the module docs).
    pub fn forget(&self, index: u64) {
        if let Some(slot) = self.slot(index) {
            slot.written
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
            slot.state.send_modify(|s| {
                *s = SlotState {
                    generation: s.generation + 1,
                    ..SlotState::default()
                }
            });
        }
    }

    /// Bytes `[offset, offset + len)` of the object were written into the
    /// target by a download (store or peer): advances the prefixes of the
    /// chunks they fall in (cut-through serving, relay).
    pub fn note_written(&self, offset: u64, len: u64) {
        let end = offset.saturating_add(len).min(self.version.size);
        let mut pos = offset;
        while pos < end {
            let index = pos / self.chunk_size;
            let chunk = self.range(index);
            let upto = end.min(chunk.end);
            if let Some(slot) = self.slot(index) {
                let prefix = {
                    let mut w = slot.written.lock().unwrap_or_else(|p| p.into_inner());
                    insert_range(&mut w, pos - chunk.start..upto - chunk.start);
                    w.first().filter(|r| r.start == 0).map_or(0, |r| r.end)
                };
                let len = chunk.end - chunk.start;
                let step = PROGRESS_NOTIFY_BYTES.min(len / 4).max(1);
                slot.state.send_if_modified(|s| {
                    let due = prefix >= s.prefix + step || prefix == len;
                    if s.held.is_none() && prefix > s.prefix && due {
                        s.prefix = prefix;
                        s.receiving = true;
                        true
                    } else {
                        false
                    }
                });
            }
            pos = upto;
        }
    }

    pub fn held(&self, index: u64) -> Option<u64> {
        self.state(index).held
    }

    /// What a reader of chunk `index` may use now.
    pub fn state(&self, index: u64) -> SlotState {
        self.slot(index)
            .map(|s| *s.state.borrow())
            .unwrap_or_default()
    }

    pub fn held_count(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.state.borrow().held.is_some())
            .count()
    }

    /// The held chunks as a bitmap (bit i: byte i / 8, bit i % 8) and their
    /// CRC-64s (0 where not held), as sent in a `HaveMap`.
    pub fn have_map(&self) -> (Vec<u8>, Vec<u64>) {
        let mut bitmap = vec![0u8; self.slots.len().div_ceil(8)];
        let mut crcs = Vec::with_capacity(self.slots.len());
        for (i, slot) in self.slots.iter().enumerate() {
            let held = slot.state.borrow().held;
            if held.is_some() {
                bitmap[i / 8] |= 1 << (i % 8);
            }
            crcs.push(held.unwrap_or(0));
        }
        (bitmap, crcs)
    }

    /// The chunks arriving here as a bitmap (layout of [`Self::have_map`])
    /// and every chunk's prefix (its length when held), as sent in a
    /// `HaveMap`'s `receiving` and `chunk_prefix`.
    pub fn arrival_map(&self) -> (Vec<u8>, Vec<u64>) {
        let mut bitmap = vec![0u8; self.slots.len().div_ceil(8)];
        let mut prefixes = Vec::with_capacity(self.slots.len());
        for (i, slot) in self.slots.iter().enumerate() {
            let s = *slot.state.borrow();
            if s.held.is_none() && (s.receiving || s.prefix > 0) {
                bitmap[i / 8] |= 1 << (i % 8);
            }
            prefixes.push(s.prefix);
        }
        (bitmap, prefixes)
    }

    /// No more chunks will arrive (the fetch failed or was replaced).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        for slot in &self.slots {
            slot.state.send_modify(|_| {});
        }
    }

    /// Readable: not closed and the target still alive.
    pub fn is_live(&self) -> bool {
        !self.closed.load(Ordering::Acquire) && self.target.strong_count() > 0
    }

    /// Waits until chunk `index` differs from `seen` (more bytes, held, or
    /// forgotten), the book closes, or `until`; the state then.
    pub async fn wait_change(&self, index: u64, seen: SlotState, until: Instant) -> SlotState {
        let Some(slot) = self.slot(index) else {
            return SlotState::default();
        };
        let mut rx = slot.state.subscribe();
        loop {
            let now = *rx.borrow_and_update();
            if now != seen || !self.is_live() {
                return now;
            }
            match tokio::time::timeout_at(until, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return self.state(index),
            }
        }
    }

    /// The target, unless the cache released it.
    pub fn target(&self) -> Option<Arc<dyn ChunkTarget>> {
        self.target.upgrade()
    }

    /// `pread` from the target; an error once the cache released it.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let target = self
            .target
            .upgrade()
            .ok_or_else(|| std::io::Error::other("object released from memory"))?;
        target.read_at(offset, buf)
    }

    /// [`read`](Self::read) into several buffers in turn (one `preadv`).
    pub fn read_vectored(
        &self,
        offset: u64,
        bufs: &mut [std::io::IoSliceMut<'_>],
    ) -> std::io::Result<()> {
        let target = self
            .target
            .upgrade()
            .ok_or_else(|| std::io::Error::other("object released from memory"))?;
        target.read_vectored_at(offset, bufs)
    }
}

/// Adds `r` to the sorted, disjoint ranges `v`, merging what touches.
fn insert_range(v: &mut Vec<Range<u64>>, r: Range<u64>) {
    if r.start >= r.end {
        return;
    }
    let at = v.partition_point(|x| x.end < r.start);
    let mut merged = r;
    while at < v.len() && v[at].start <= merged.end {
        let x = v.remove(at);
        merged = merged.start.min(x.start)..merged.end.max(x.end);
    }
    v.insert(at, merged);
}

/// A download's destination (store or peer) that also advances its book's
/// chunk prefixes, so peers can be served the bytes as they land.
pub struct RecordingSink {
    pub target: Arc<dyn ChunkTarget>,
    pub book: Arc<ChunkBook>,
}

impl RangeSink for RecordingSink {
    fn write_at(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.target.write_at(offset, data)?;
        self.book.note_written(offset, data.len() as u64);
        Ok(())
    }
}

impl ChunkTarget for RecordingSink {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.target.read_at(offset, buf)
    }

    fn read_vectored_at(
        &self,
        offset: u64,
        bufs: &mut [std::io::IoSliceMut<'_>],
    ) -> std::io::Result<()> {
        self.target.read_vectored_at(offset, bufs)
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
    use crate::object_source::VecTarget;
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
    fn written_ranges_merge_and_the_prefix_counts_only_bytes_from_the_chunk_start() {
        let mut v = Vec::new();
        insert_range(&mut v, 10..20);
        insert_range(&mut v, 30..40);
        insert_range(&mut v, 0..5);
        assert_eq!(v, [0..5, 10..20, 30..40]);
        insert_range(&mut v, 5..10);
        assert_eq!(v, [0..20, 30..40]);
        insert_range(&mut v, 15..35);
        let whole = Range { start: 0, end: 40 };
        assert_eq!(v, std::slice::from_ref(&whole));
        insert_range(&mut v, 3..3);
        assert_eq!(v, std::slice::from_ref(&whole));

        let target: Arc<dyn ChunkTarget> = Arc::new(VecTarget::with_len(10));
        let book = ChunkBook::new(version(10), 4, &target);
        // Chunk 1 ([4, 8)): its second half first, then a write across
        // chunks 1 and 2.
        book.note_written(6, 2);
        assert_eq!(book.state(1).prefix, 0, "not from the chunk's start");
        book.note_written(4, 2);
        assert_eq!(book.state(1).prefix, 4);
        book.note_written(7, 3);
        assert_eq!(book.state(2).prefix, 2);
        assert_eq!(book.state(0), SlotState::default());
        // Held chunks show in the have-map; forgetting one resets it.
        book.record(1, 9);
        book.record(2, 8);
        assert_eq!(book.have_map(), (vec![0b110], vec![0, 9, 8]));
        book.forget(1);
        assert_eq!(
            book.state(1),
            SlotState {
                generation: 1,
                ..SlotState::default()
            }
        );
        assert_eq!(book.have_map().0, vec![0b100]);
    }

    #[test]
    fn arriving_chunks_show_with_their_prefix_and_a_forgotten_one_changes_generation() {
        let target: Arc<dyn ChunkTarget> = Arc::new(VecTarget::with_len(12));
        let book = ChunkBook::new(version(12), 4, &target);
        // Chunk 0 begins (no byte yet), chunk 1 has 2 bytes, chunk 2 is held.
        book.begin(0);
        assert!(book.state(0).receiving);
        book.note_written(4, 2);
        book.record(2, 5);
        book.begin(2);
        assert_eq!(book.arrival_map(), (vec![0b011], vec![0, 2, 4]));
        assert_eq!(book.have_map(), (vec![0b100], vec![0, 0, 5]));
        // Its pull failed: chunk 1 is neither arriving nor served any more,
        // and readers of the failed download see the generation change.
        book.forget(1);
        assert_eq!(book.state(1).generation, 1);
        assert_eq!(book.arrival_map(), (vec![0b001], vec![0, 0, 4]));
        book.begin(1);
        book.note_written(4, 4);
        book.record(1, 9);
        let s = book.state(1);
        assert_eq!(
            (s.held, s.prefix, s.receiving, s.generation),
            (Some(9), 4, false, 1)
        );
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
                book.wait_change(1, SlotState::default(), until).await.held
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
        // A timed-out wait answers the unchanged state.
        let soon = Instant::now() + Duration::from_millis(10);
        assert_eq!(
            book.wait_change(2, SlotState::default(), soon).await,
            SlotState::default()
        );
        assert_eq!(reg.len(), 1);
        drop(target);
        assert!(book.read(4, &mut buf).is_err());
        assert!(reg.get(&v).is_none());
        assert!(reg.is_empty());
    }
}
