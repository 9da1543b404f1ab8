//! What one object's fetch learned about its sources, and how long a pull
//! from each kind of source may take: so a peer that claims every chunk and
//! infinite upload but stops delivering cannot capture the swarm.
//!
//! Design decisions:
//! - **Excluded** peers will never serve this object (see
//!   [`super::swarm_fetcher`]): its ring is computed without them.
//! - **Suspects** let this fetch down once as a holder or relay (a stream
//!   that stalled, broke, went without data past its patience, or delivered
//!   below [`MIN_HOLDER_RATE`]), or as an owner whose chunk another complete
//!   holder had. A suspect stays in the ring (its death is membership's
//!   call, and bytes it serves are verified like any), but later picks for
//!   this object leave it out whenever anyone else can serve the chunk
//!   ([`SourceRecord::demote`]). Picks are weighted by *claimed* idle upload
//!   (believed up to 100 Gbit/s), so a liar would otherwise win nearly every
//!   pick and cost each one the patience; now it costs at most one patience
//!   per pull running when it first fails (at most the pull concurrency,
//!   all in parallel), per object. The record lives as long as the fetch:
//!   a peer that recovers is a full candidate again for the next object.
//! - **Patience by kind.** A peer that claims the chunk complete (a
//!   holder, or an owner that holds it) should answer and stream at once:
//!   while another peer could serve the chunk, such a pull may go
//!   [`SOURCE_PATIENCE`] without data (not the owner's peer wait) and must
//!   average [`MIN_HOLDER_RATE`] after that grace. A relay's pace is its
//!   upstream's (a relay stalls when the owner does, and the owner is where
//!   its pull would move), and an owner still fetching the chunk may wait
//!   for the store: both keep the peer wait, as does every source when no
//!   other peer could serve the chunk (the store is the only alternative):
//!   a slow source is not a dead one. A relay that fails is a suspect all
//!   the same.

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::sources::{Candidate, SourceKind};
use super::upload::IDLE_FLOOR;

/// How long a holder or relay pull with an alternative may go without
/// data (first answer included).
pub const SOURCE_PATIENCE: Duration = Duration::from_secs(5);
/// The average rate a holder pull with an alternative must reach after
/// [`SOURCE_PATIENCE`]: a quarter of the smallest idle upload any holder
/// reports ([`IDLE_FLOOR`]), so only a holder far below every claim fails it.
pub const MIN_HOLDER_RATE: u64 = IDLE_FLOOR / 4;

/// One object fetch's verdicts on its sources (see the module docs).
#[derive(Debug, Default)]
pub struct SourceRecord {
    excluded: Mutex<HashSet<String>>,
    suspects: Mutex<HashSet<String>>,
}

fn lock(set: &Mutex<HashSet<String>>) -> MutexGuard<'_, HashSet<String>> {
    set.lock().unwrap_or_else(|p| p.into_inner())
}

impl SourceRecord {
    /// Excludes `peer` from this object's ring; true the first time.
    pub fn exclude(&self, peer: &str) -> bool {
        lock(&self.excluded).insert(peer.to_string())
    }

    pub fn is_excluded(&self, peer: &str) -> bool {
        lock(&self.excluded).contains(peer)
    }

    /// Marks `peer` a suspect; true the first time.
    pub fn suspect(&self, peer: &str) -> bool {
        lock(&self.suspects).insert(peer.to_string())
    }

    pub fn is_suspect(&self, peer: &str) -> bool {
        lock(&self.suspects).contains(peer)
    }

    /// `candidates` without the suspects, unless only suspects are left.
    pub fn demote(&self, candidates: Vec<Candidate>) -> Vec<Candidate> {
        let suspects = lock(&self.suspects);
        if candidates.iter().all(|c| suspects.contains(&c.peer)) {
            return candidates;
        }
        candidates
            .into_iter()
            .filter(|c| !suspects.contains(&c.peer))
            .collect()
    }
}

/// How long a pull may take, by the kind of source and whether another
/// peer could serve the chunk (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Patience {
    /// How long the chunk may go without data (sent as `wait_ms`; the
    /// first answer must come within it plus a margin).
    pub without_data: Duration,
    /// How long the whole pull may take, when bounded.
    pub whole: Option<Duration>,
}

impl Patience {
    /// The owner's: the chunk may go `peer_wait` without data, and the
    /// whole pull is unbounded.
    pub fn owner(peer_wait: Duration) -> Patience {
        Patience {
            without_data: peer_wait,
            whole: None,
        }
    }

    /// The patience for a pull of `len` bytes from `source`; the owner's
    /// `peer_wait` where no other peer could serve the chunk.
    pub fn of(source: &Candidate, alternative: bool, len: u64, peer_wait: Duration) -> Patience {
        let owner_rules = Patience::owner(peer_wait);
        let complete = source.kind != SourceKind::Relay && source.prefix >= len;
        if !alternative || !complete {
            return owner_rules;
        }
        let without_data = peer_wait.min(SOURCE_PATIENCE);
        let at_min_rate = Duration::from_secs_f64(len as f64 / MIN_HOLDER_RATE as f64);
        Patience {
            without_data,
            whole: Some(without_data + at_min_rate),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(peer: &str) -> Candidate {
        Candidate {
            peer: peer.into(),
            kind: SourceKind::Holder,
            prefix: 0,
        }
    }

    fn source(kind: SourceKind, prefix: u64) -> Candidate {
        Candidate {
            peer: "p".into(),
            kind,
            prefix,
        }
    }

    fn names(c: &[Candidate]) -> Vec<&str> {
        c.iter().map(|c| c.peer.as_str()).collect()
    }

    #[test]
    fn suspects_are_left_out_while_anyone_else_can_serve() {
        let r = SourceRecord::default();
        assert!(r.suspect("liar"));
        assert!(!r.suspect("liar"), "marked once");
        assert!(r.is_suspect("liar") && !r.is_suspect("honest"));
        let both = vec![holder("liar"), holder("honest")];
        assert_eq!(names(&r.demote(both)), ["honest"]);
        // Only suspects left: they are still sources (not the store).
        assert_eq!(names(&r.demote(vec![holder("liar")])), ["liar"]);
        assert!(r.demote(vec![]).is_empty());
        // Exclusion is a separate verdict.
        assert!(!r.is_excluded("liar"));
        assert!(r.exclude("liar") && !r.exclude("liar"));
        assert!(r.is_excluded("liar"));
    }

    #[test]
    fn complete_sources_with_an_alternative_get_a_short_patience() {
        let wait = Duration::from_secs(60);
        let len = 16 << 20;
        let of =
            |kind, prefix, alternative| Patience::of(&source(kind, prefix), alternative, len, wait);
        // An owner still fetching the chunk, and a relay: the peer wait,
        // however slow.
        let owner = of(SourceKind::Owner, len / 2, true);
        assert_eq!((owner.without_data, owner.whole), (wait, None));
        assert_eq!(of(SourceKind::Relay, len / 2, true), owner);
        // No other peer: the store is the only alternative; slow is fine.
        for kind in [SourceKind::Owner, SourceKind::Holder, SourceKind::Relay] {
            assert_eq!(of(kind, len, false), owner);
        }
        // A holder, or an owner that holds the chunk complete.
        for kind in [SourceKind::Holder, SourceKind::Owner] {
            let h = of(kind, len, true);
            assert_eq!(h.without_data, SOURCE_PATIENCE);
            // 16 MiB at 250 kB/s: 67.1 s after the grace.
            let whole = h.whole.unwrap();
            assert!(whole > Duration::from_secs(72) && whole < Duration::from_secs(73));
        }
        // A shorter peer wait (tests) shortens the patience too.
        let short = Duration::from_secs(3);
        let h = Patience::of(&source(SourceKind::Holder, 0), true, 0, short);
        assert_eq!((h.without_data, h.whole), (short, Some(short)));
    }
}
