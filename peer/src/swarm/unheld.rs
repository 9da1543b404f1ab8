//! What a node does when a peer names an object version it does not hold:
//! start skew.
//!
//! Design decisions:
//! - Nodes of one job do not start an object at the same moment (a lazy
//!   per-directory prefetch, a late process). When a peer pulls, or asks
//!   `Have` about, a version this node has no book for, the chunk server
//!   asks an [`UnheldObjectHook`] whether this node will fetch it. The hook
//!   belongs to whoever runs the node (the `ossc` commands wire it to the
//!   agent's prefetch of that key when the agent lists it with the same ETag
//!   and size) and must return at once; true means "fetching it, or about
//!   to". The chunk server then waits for the object's book like for a
//!   chunk in progress (bounded by the request's wait), and a `Have` leaves
//!   the version out of its `declined` list, so the puller waits for this
//!   owner instead of reassigning its chunks and going to the store.
//! - **Bounded.** Only requests that passed authentication reach the hook.
//!   Each version is asked about at most once per [`ASK_AGAIN_AFTER`] (its
//!   answer is reused meanwhile), at most [`MAX_NEW_PER_WINDOW`] versions
//!   are asked about per window (any beyond are declined without asking),
//!   and at most [`MAX_REMEMBERED`] answers are kept.
//! - Without a hook (tests, embedders) every unheld version is declined,
//!   which keeps the old behaviour: its chunks go to their next owners.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::chunk_book::ObjectVersion;

/// Asked whether this node will fetch an object version a peer named; must
/// not block (start the fetch in the background).
pub type UnheldObjectHook = Arc<dyn Fn(&ObjectVersion) -> bool + Send + Sync>;

/// How long one answer of the hook stands for its version.
pub const ASK_AGAIN_AFTER: Duration = Duration::from_secs(10);
/// Versions the hook is asked about per [`ASK_AGAIN_AFTER`] window, at most.
pub const MAX_NEW_PER_WINDOW: usize = 64;
/// Answers remembered, at most (older ones are dropped first).
pub const MAX_REMEMBERED: usize = 1024;

/// The hook and its remembered answers.
#[derive(Default)]
pub struct UnheldObjects {
    hook: Mutex<Option<UnheldObjectHook>>,
    answers: Mutex<Answers>,
}

#[derive(Default)]
struct Answers {
    /// version → (when the hook was asked, its answer).
    by_version: HashMap<ObjectVersion, (Instant, bool)>,
    /// Start of the current window and the versions asked about in it.
    window: Option<(Instant, usize)>,
}

impl UnheldObjects {
    /// Installs (or replaces) the hook; forgets earlier answers.
    pub fn set_hook(&self, hook: UnheldObjectHook) {
        *self.hook.lock().unwrap_or_else(|p| p.into_inner()) = Some(hook);
        self.lock_answers().by_version.clear();
    }

    fn lock_answers(&self) -> std::sync::MutexGuard<'_, Answers> {
        self.answers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this node fetches (or is about to fetch) `version`, which it
    /// does not hold: the hook's answer, asked within the bounds of the
    /// module docs.
    pub fn will_fetch(&self, version: &ObjectVersion) -> bool {
        self.will_fetch_at(version, Instant::now())
    }

    fn will_fetch_at(&self, version: &ObjectVersion, now: Instant) -> bool {
        let Some(hook) = self.hook.lock().unwrap_or_else(|p| p.into_inner()).clone() else {
            return false;
        };
        {
            let mut a = self.lock_answers();
            if let Some((at, answer)) = a.by_version.get(version) {
                if now.duration_since(*at) < ASK_AGAIN_AFTER {
                    return *answer;
                }
            }
            let window = match a.window {
                Some((start, n)) if now.duration_since(start) < ASK_AGAIN_AFTER => (start, n),
                _ => (now, 0),
            };
            if window.1 >= MAX_NEW_PER_WINDOW {
                return false;
            }
            a.window = Some((window.0, window.1 + 1));
        }
        // Asked outside the lock: the hook may take locks of its own.
        let answer = hook(version);
        let mut a = self.lock_answers();
        if a.by_version.len() >= MAX_REMEMBERED {
            a.by_version
                .retain(|_, (at, _)| now.duration_since(*at) < ASK_AGAIN_AFTER);
            if a.by_version.len() >= MAX_REMEMBERED {
                a.by_version.clear();
            }
        }
        a.by_version.insert(version.clone(), (now, answer));
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn version(key: &str) -> ObjectVersion {
        ObjectVersion {
            bucket: "b".into(),
            key: key.into(),
            etag: "e".into(),
            size: 1,
        }
    }

    #[test]
    fn the_hook_is_asked_once_per_version_and_window_and_at_most_so_many_versions() {
        let u = UnheldObjects::default();
        assert!(!u.will_fetch(&version("k")), "no hook: declined");
        let calls = Arc::new(AtomicUsize::new(0));
        u.set_hook({
            let calls = calls.clone();
            Arc::new(move |v: &ObjectVersion| {
                calls.fetch_add(1, Ordering::Relaxed);
                v.key.starts_with("listed")
            })
        });
        let t0 = Instant::now();
        assert!(u.will_fetch_at(&version("listed-1"), t0));
        assert!(u.will_fetch_at(&version("listed-1"), t0 + Duration::from_secs(1)));
        assert!(!u.will_fetch_at(&version("other"), t0));
        assert_eq!(calls.load(Ordering::Relaxed), 2, "answers are reused");
        // After the window the version is asked about again.
        let later = t0 + ASK_AGAIN_AFTER;
        assert!(u.will_fetch_at(&version("listed-1"), later));
        assert_eq!(calls.load(Ordering::Relaxed), 3);
        // A flood of versions: the hook sees at most MAX_NEW_PER_WINDOW per
        // window (one was asked in this window already).
        for i in 0..3 * MAX_NEW_PER_WINDOW {
            u.will_fetch_at(&version(&format!("listed-{i}-x")), later);
        }
        assert_eq!(calls.load(Ordering::Relaxed), 2 + MAX_NEW_PER_WINDOW);
        assert!(!u.will_fetch_at(&version("listed-new"), later));
        let next = later + ASK_AGAIN_AFTER;
        assert!(u.will_fetch_at(&version("listed-new"), next));
    }
}
