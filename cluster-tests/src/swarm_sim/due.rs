//! An indexed min-heap of due times: each key (a flow, a pool) has at most
//! one entry, which is moved in place when its time changes. Transfers are
//! rescheduled at almost every event, so a plain heap would fill with stale
//! entries that every pop has to skip.

/// Keys `0..` with a due time each; ties go to the smaller key.
#[derive(Debug, Default)]
pub struct DueHeap {
    heap: Vec<(f64, usize)>,
    /// Position of each key in `heap` (`ABSENT` if none).
    pos: Vec<usize>,
}

const ABSENT: usize = usize::MAX;

fn before(a: (f64, usize), b: (f64, usize)) -> bool {
    a.0 < b.0 || (a.0 == b.0 && a.1 < b.1)
}

impl DueHeap {
    /// Schedules `key` at `t` (replacing its previous time).
    pub fn set(&mut self, key: usize, t: f64) {
        if key >= self.pos.len() {
            self.pos.resize(key + 1, ABSENT);
        }
        match self.pos[key] {
            ABSENT => {
                self.heap.push((t, key));
                self.pos[key] = self.heap.len() - 1;
                self.up(self.heap.len() - 1);
            }
            i => {
                self.heap[i].0 = t;
                self.up(i);
                self.down(self.pos[key]);
            }
        }
    }

    pub fn remove(&mut self, key: usize) {
        let Some(&i) = self.pos.get(key).filter(|i| **i != ABSENT) else {
            return;
        };
        self.pos[key] = ABSENT;
        let last = self.heap.pop().expect("a present key has an entry");
        if i < self.heap.len() {
            self.heap[i] = last;
            self.pos[last.1] = i;
            self.up(i);
            self.down(self.pos[last.1]);
        }
    }

    /// The earliest (time, key).
    pub fn peek(&self) -> Option<(f64, usize)> {
        self.heap.first().copied()
    }

    fn up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if !before(self.heap[i], self.heap[parent]) {
                break;
            }
            self.swap(i, parent);
            i = parent;
        }
    }

    fn down(&mut self, mut i: usize) {
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut m = i;
            if l < self.heap.len() && before(self.heap[l], self.heap[m]) {
                m = l;
            }
            if r < self.heap.len() && before(self.heap[r], self.heap[m]) {
                m = r;
            }
            if m == i {
                return;
            }
            self.swap(i, m);
            i = m;
        }
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.pos[self.heap[a].1] = a;
        self.pos[self.heap[b].1] = b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swarm_sim::rng::Rng;

    #[test]
    fn pops_in_time_order_after_moves_and_removals() {
        let mut h = DueHeap::default();
        let mut rng = Rng::new(4);
        let mut want = vec![None; 200];
        for step in 0..5_000 {
            let key = rng.below(200);
            if step % 3 == 0 {
                h.remove(key);
                want[key] = None;
            } else {
                let t = rng.unit();
                h.set(key, t);
                want[key] = Some(t);
            }
        }
        let mut got = Vec::new();
        while let Some((t, key)) = h.peek() {
            assert_eq!(want[key], Some(t));
            got.push(t);
            h.remove(key);
        }
        assert_eq!(got.len(), want.iter().flatten().count());
        assert!(got.windows(2).all(|w| w[0] <= w[1]));
    }
}
