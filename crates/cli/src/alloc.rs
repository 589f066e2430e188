//! The one allocator setting this binary changes.
//!
//! mimalloc keeps freed memory for `purge_delay` milliseconds before it
//! gives it back to the OS; its version 3 waits 1,000 ms. A replay's
//! GetRecords answers free tens of megabytes a second, so with that delay
//! the server's resident memory peaked at 56–63 MiB during a replay against
//! 19 MiB with a prompt purge (docs/PERFORMANCE.md, fourth pass). The
//! variable `MIMALLOC_PURGE_DELAY` (or its old name `MIMALLOC_RESET_DELAY`),
//! when set, still wins.
#![allow(unsafe_code)]

/// Milliseconds mimalloc keeps freed memory before returning it: the delay
/// mimalloc's version 2 used.
pub const PURGE_DELAY_MS: i64 = 10;

/// mimalloc v3's `mi_option_purge_delay`: its position in `mi_option_e`,
/// which `libmimalloc-sys` does not name. The test below checks that this
/// slot holds the purge delay's default.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Sets the purge delay unless the environment set it. Call at the start of
/// `main`, before any thread starts.
pub fn return_freed_memory_promptly() {
    // mimalloc matches its variables without regard to case and still
    // honours the old name of this one.
    let set_by_user = std::env::vars_os().any(|(k, _)| {
        k.to_str().is_some_and(|k| {
            k.eq_ignore_ascii_case("MIMALLOC_PURGE_DELAY") || k.eq_ignore_ascii_case("MIMALLOC_RESET_DELAY")
        })
    });
    if set_by_user {
        return;
    }
    // SAFETY: `mi_option_set` stores one integer in mimalloc's option table;
    // it takes no pointers. It is not thread-safe, which is why it runs at
    // the start of `main`, before this process starts any thread.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_delay_option_slot_is_mimallocs_purge_delay() {
        // SAFETY: reads one integer from mimalloc's option table.
        let v = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        match std::env::var("MIMALLOC_PURGE_DELAY") {
            Ok(set) => assert_eq!(v.to_string(), set),
            // mimalloc v3's default; no other option defaults to 1,000.
            Err(_) => assert_eq!(
                v, 1000,
                "option slot {MI_OPTION_PURGE_DELAY} is not the purge delay"
            ),
        }
    }
}
