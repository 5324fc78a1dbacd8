//! The daemon's memory at rest: its few threads share one malloc arena, what a snapshot
//! freed is handed back to the system once the evaluation is over (glibc; elsewhere both are
//! no-ops), and the executable's pages that only start-up read are handed back once it is
//! over (Linux).
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

/// Hands back to the system the pages of the executable's read-only mappings (its code and
/// constants) that this process alone holds, once, after start-up: the parsing of the
/// playbooks, the first snapshot and the first diagnosis touched most of the code, and the
/// loop at rest runs little of it. What is run again is read back from the page cache (or the
/// disk) the first time; nothing is lost, since those pages are the file's. The bytes advised,
/// `None` when the mappings cannot be read or the kernel refuses (older than 5.4, no
/// `MADV_PAGEOUT`): then nothing changed.
pub fn page_out_own_code() -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
        let here = page_out_own_code as *const () as usize;
        let ranges = own_read_only(&maps, here)?;
        let mut advised = 0;
        for (start, end) in ranges {
            let len = end.saturating_sub(start);
            // SAFETY: [start, end) is a whole mapping of this process as the kernel listed it,
            // page-aligned, and not writable: MADV_PAGEOUT only reclaims its pages (written
            // back first where needed), so every byte reads the same afterwards.
            let done =
                unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_PAGEOUT) };
            if done != 0 {
                return None;
            }
            advised += len;
        }
        Some(advised)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// The address ranges of the read-only mappings (no `w` in the permissions) of the file mapped
/// at `here`, from the text of /proc/self/maps; `None` when no file is mapped at `here`.
fn own_read_only(maps: &str, here: usize) -> Option<Vec<(usize, usize)>> {
    let parsed: Vec<(usize, usize, &str, &str)> = maps
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (start, end) = fields.next()?.split_once('-')?;
            let start = usize::from_str_radix(start, 16).ok()?;
            let end = usize::from_str_radix(end, 16).ok()?;
            let perms = fields.next()?;
            // the path is the rest of the line from its first slash (no field before it has one)
            let path = line.get(line.find('/')?..)?;
            Some((start, end, perms, path))
        })
        .collect();
    let own = parsed
        .iter()
        .find(|(start, end, _, _)| (*start..*end).contains(&here))?
        .3;
    Some(
        parsed
            .iter()
            .filter(|(start, end, perms, path)| *path == own && !perms.contains('w') && end > start)
            .map(|(start, end, _, _)| (*start, *end))
            .collect(),
    )
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

    const MAPS: &str = "\
55d0c0a00000-55d0c0b00000 r--p 00000000 fd:01 1234    /usr/bin/nginx-medic
55d0c0b00000-55d0c1400000 r-xp 00100000 fd:01 1234    /usr/bin/nginx-medic
55d0c1400000-55d0c1500000 r--p 00a00000 fd:01 1234    /usr/bin/nginx-medic
55d0c1500000-55d0c1510000 rw-p 00b00000 fd:01 1234    /usr/bin/nginx-medic
55d0c2000000-55d0c2100000 rw-p 00000000 00:00 0       [heap]
7f0000000000-7f0000100000 r-xp 00000000 fd:01 99      /usr/lib/x86_64-linux-gnu/libc.so.6
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0       [stack]
";

    #[test]
    fn the_own_read_only_mappings_are_those_of_the_file_mapped_here() {
        assert_eq!(
            own_read_only(MAPS, 0x55d0_c0c0_0000),
            Some(vec![
                (0x55d0_c0a0_0000, 0x55d0_c0b0_0000),
                (0x55d0_c0b0_0000, 0x55d0_c140_0000),
                (0x55d0_c140_0000, 0x55d0_c150_0000),
            ])
        );
        assert_eq!(
            own_read_only(MAPS, 0x7f00_0000_0010),
            Some(vec![(0x7f00_0000_0000, 0x7f00_0010_0000)])
        );
        assert_eq!(own_read_only(MAPS, 0x55d0_c200_0010), None);
        assert_eq!(own_read_only(MAPS, 0x10), None);
    }

    #[test]
    fn paging_out_the_own_code_keeps_it_running() {
        // a kernel without MADV_PAGEOUT refuses, and nothing changed
        if let Some(bytes) = page_out_own_code() {
            assert!(bytes > 0);
        }
        // the code and its constants run and read the same afterwards
        assert_eq!(
            own_read_only(MAPS, 0x7f00_0000_0010),
            Some(vec![(0x7f00_0000_0000, 0x7f00_0010_0000)])
        );
    }
}
