//! The daemon's memory at rest: its few threads share one malloc arena, and what a snapshot
//! freed is handed back to the system once the evaluation is over (glibc; elsewhere both are
//! no-ops).
//!
//! glibc gives each thread that allocates its own arena (the snapshot's blocking thread, a
//! name being resolved, a child's output being drained), and an arena keeps what it once held
//! mapped after its thread ends. The daemon's threads take turns rather than compete, so one
//! arena costs no time; the whole diagnosis is rebuilt at every evaluation, so its peak need
//! not stay resident between them.

/// Makes every thread allocate from the main arena. Called once at the start, before any
/// thread but the runtime's allocates.
pub fn one_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tuning parameter of glibc's allocator; it is thread-safe
    // and reads or writes no memory of ours.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Returns the free memory at the heap's top and the free whole pages inside it to the
/// system. Costs a walk of the free lists: called after an evaluation, not per allocation.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes the arenas' locks itself and frees nothing still allocated.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Calls [`trim`] when dropped: held for the length of an evaluation, it is dropped after
/// everything the evaluation allocated (locals drop in reverse order of declaration).
pub struct TrimOnDrop;

impl Drop for TrimOnDrop {
    fn drop(&mut self) {
        trim();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimming_after_a_peak_keeps_what_is_still_allocated() {
        one_arena();
        let kept: Vec<u8> = vec![7; 1 << 16];
        {
            let _trim = TrimOnDrop;
            let peak: Vec<Vec<u8>> = (0..64).map(|i| vec![i; 1 << 14]).collect();
            assert_eq!(peak.len(), 64);
        }
        assert!(kept.iter().all(|&b| b == 7));
    }
}
