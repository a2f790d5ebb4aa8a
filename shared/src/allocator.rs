//! Process-wide allocator settings, applied once at startup by the binaries.
//!
//! Extraction allocates rows on one thread and frees them on mapping threads.
//! glibc's malloc then gives every thread an arena of its own and keeps what
//! those arenas freed: measured on a 10M-row run, a whole standalone process
//! peaked at 1,187 MiB with the default (8 arenas per core) and at 332 MiB with
//! two arenas, and ran faster (`docs/benchmarks.md`).

/// Arenas when the environment does not choose (`MALLOC_ARENA_MAX`).
const ARENAS: i32 = 2;

/// Limits glibc's malloc arenas unless `MALLOC_ARENA_MAX` is set. Call it
/// first thing in `main`, before any thread starts. Elsewhere than Linux with
/// glibc it does nothing.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes a malloc tunable; it is called before
        // the program starts other threads.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, ARENAS);
        }
    }
}
