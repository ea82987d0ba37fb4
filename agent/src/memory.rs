//! The allocator's settings for a long-running agent.
//!
//! glibc's malloc gives each thread that allocates an arena of its own (up
//! to eight per core), and after a large block is freed it raises its mmap
//! and trim thresholds to that block's size. For a daemon that mostly
//! sleeps between changes, both keep memory resident that a big change once
//! used (publishing 10 000 ports, a conntrack pass over 60 000 flows): in
//! the bench about a third of the agent's resident memory. So the agent
//! keeps one arena, fixed thresholds, and gives free pages back after each
//! conntrack pass ([`trim`]).

/// Blocks this large or larger get their own mapping, returned at free.
const MMAP_THRESHOLD: i32 = 128 * 1024;
/// Free memory at the heap's top past this is returned at once.
const TRIM_THRESHOLD: i32 = 128 * 1024;

/// Set the allocator up for the agent; call before any thread starts.
/// False when the C library refused a setting (or is not glibc).
pub fn tune() -> bool {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: mallopt only sets the allocator's parameters.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1) == 1
                && libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        }
    }
    #[cfg(not(target_env = "gnu"))]
    false
}

/// Give the allocator's free pages back to the kernel.
pub fn trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_env = "gnu")]
    fn glibc_takes_the_settings() {
        assert!(super::tune());
        // A large block comes and goes: trim runs on whatever is left.
        let v = vec![1u8; 4 << 20];
        assert_eq!(v.iter().map(|b| *b as usize).sum::<usize>(), 4 << 20);
        drop(v);
        super::trim();
    }
}
