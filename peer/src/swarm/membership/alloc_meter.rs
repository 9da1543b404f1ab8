//! Test-only allocation meter: the test binary's global allocator forwards
//! to the system allocator and keeps, per thread, the bytes that thread has
//! allocated minus those it freed. A test that builds a structure on one
//! thread (a current-thread runtime for async parts) reads how much memory
//! the structure holds.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    /// Net bytes allocated by this thread (const-initialised, no
    /// destructor: usable from inside the allocator at any time).
    static HELD: Cell<i64> = const { Cell::new(0) };
}

fn add(bytes: i64) {
    let _ = HELD.try_with(|h| h.set(h.get() + bytes));
}

/// Net bytes this thread holds allocated.
pub fn held_bytes() -> i64 {
    HELD.with(|h| h.get())
}

struct CountingAllocator;

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees hold; the bookkeeping only touches a
// thread-local `Cell` and never allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract
        // (non-zero size), which is `System.alloc`'s.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            add(layout.size() as i64);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            add(layout.size() as i64);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by this allocator, i.e. by `System`,
        // with `layout` (the caller's contract).
        unsafe { System.dealloc(ptr, layout) };
        add(-(layout.size() as i64));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr`/`layout` come from this allocator (`System`) and
        // `new_size` is valid per the caller's contract.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            add(new_size as i64 - layout.size() as i64);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

#[test]
fn the_meter_sees_what_this_thread_holds() {
    let before = held_bytes();
    let v = vec![0u8; 1 << 20];
    assert!(held_bytes() - before >= 1 << 20);
    drop(v);
    assert!(held_bytes() - before < 1 << 10);
}
