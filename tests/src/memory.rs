//! A counting allocator for tests that must show memory does not grow with
//! rows. A test binary installs it with
//! `#[global_allocator] static ALLOCATOR: ebb_tests::memory::Counting = ebb_tests::memory::Counting;`
//! and measures the peak of live heap bytes over a piece of work.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// The system allocator, counting live bytes and their peak.
pub struct Counting;

// SAFETY: every call is passed to the system allocator unchanged; the
// counters only observe the sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let pointer = System.alloc(layout);
        if !pointer.is_null() {
            grew(layout.size());
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        System.dealloc(pointer, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let pointer = System.alloc_zeroed(layout);
        if !pointer.is_null() {
            grew(layout.size());
        }
        pointer
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let moved = System.realloc(pointer, layout, new_size);
        if !moved.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        moved
    }
}

fn grew(bytes: usize) {
    INSTALLED.store(true, Ordering::Relaxed);
    let live = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

/// The most live heap bytes above what was live when `work` started, with
/// its result. Fails when `Counting` is not the binary's allocator: the
/// measurement would be meaningless.
pub async fn peak_growth<T>(work: impl std::future::Future<Output = T>) -> (T, usize) {
    drop(std::hint::black_box(Box::new(0u64)));
    assert!(
        INSTALLED.load(Ordering::Relaxed),
        "this test binary must install #[global_allocator] ebb_tests::memory::Counting"
    );
    let baseline = LIVE.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);
    let result = work.await;
    (result, PEAK.load(Ordering::Relaxed).saturating_sub(baseline))
}
