//! Tunes the C allocator at start, before any thread exists.
//!
//! Owns one setting: on glibc, allocations of 1 MiB and more always get their own mapping,
//! which goes back to the system when freed. Must never change behaviour elsewhere: on other
//! C libraries and systems this does nothing.
//!
//! Why: glibc's mmap threshold is dynamic. After the first free of a large mapped block it
//! rises to that block's size, so every later 19 MiB argon2 block (one per password check) is
//! carved out of the hashing thread's malloc arena instead, and the trim threshold rises to
//! twice that: each arena then keeps tens of MiB for good. In a 900-login flood
//! (chaos-tests/bench/login-flood.py) node RSS stayed at 330-350 MB after the flood with the
//! default and at 65 MB with the threshold fixed at 1 MiB; capping the number of arenas instead
//! made it worse (more hashes in one arena). Numbers in docs/architecture.md.

/// Allocations at least this large are mapped on their own (and unmapped on free).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 1 << 20;

/// Fixes glibc's mmap threshold (which also stops its dynamic adjustment of the trim
/// threshold). Call first thing in `main`.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // mallopt(3) has no Rust binding in std; libc's is the only way without a new crate.
        #[allow(unsafe_code)]
        // SAFETY: mallopt only sets an allocator parameter; it is called before any other
        // thread exists, and a refusal (0) leaves glibc's default in place, which is safe.
        let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
        if ok == 0 {
            eprintln!(
                "conclave: could not fix the allocator's mmap threshold; memory freed after a login flood may stay with the process"
            );
        }
    }
}
