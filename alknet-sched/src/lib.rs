//! Scheduling hints for alknet's threads.
//!
//! A tunnel server is a relay: most of its work is a short burst after a
//! wake-up (a packet arrived, a dial completed), and every microsecond it
//! waits for a CPU is a microsecond added to each tunnel's round trip.
//! Linux's EEVDF scheduler (6.12 and later) lets a thread ask for shorter
//! slices than the default: it then runs sooner after it wakes, and a task
//! it wakes itself (the target's `accept` after a loopback dial) rarely
//! preempts it before its burst is done, while its share of the CPU stays
//! what it was. No privilege is needed. Elsewhere, and on older kernels,
//! asking changes nothing.
//!
//! ```
//! use std::time::Duration;
//! use alknet_sched::{SliceOutcome, request_short_slices};
//!
//! match request_short_slices(Duration::from_micros(100)) {
//!     Ok(SliceOutcome::Applied(slice)) => assert!(slice >= Duration::from_micros(100)),
//!     Ok(SliceOutcome::NotSupported | SliceOutcome::LeftAlone) => {}
//!     Err(error) => eprintln!("{error}"),
//! }
//! ```

use std::io;
use std::time::Duration;

#[cfg(target_os = "linux")]
mod linux;

/// The shortest slice Linux grants; shorter requests are raised to it.
pub const MIN_SLICE: Duration = Duration::from_micros(100);

/// The longest slice Linux grants; longer requests are lowered to it.
pub const MAX_SLICE: Duration = Duration::from_millis(100);

/// What asking for short slices did to the calling thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SliceOutcome {
    /// The thread now runs in slices of this length (and so do the threads
    /// it starts from now on).
    Applied(Duration),
    /// The kernel keeps no custom slices (before Linux 6.12, or not Linux):
    /// nothing changed.
    NotSupported,
    /// The thread runs under a real-time, deadline or idle policy that
    /// someone chose on purpose: it was left as it is.
    LeftAlone,
}

/// Why the request failed (the thread's scheduling is then unchanged).
#[derive(Debug, thiserror::Error)]
pub enum SchedError {
    /// The kernel refused a call (a seccomp filter, for instance).
    #[error("{call} failed: {source}")]
    Syscall {
        /// The system call.
        call: &'static str,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
}

/// Asks the kernel to run the calling thread in slices of `slice` (within
/// [`MIN_SLICE`]..=[`MAX_SLICE`]), keeping its policy and nice value;
/// threads it starts afterwards inherit the request.
///
/// # Errors
///
/// [`SchedError::Syscall`] when the kernel refuses the calls.
pub fn request_short_slices(slice: Duration) -> Result<SliceOutcome, SchedError> {
    let slice = slice.clamp(MIN_SLICE, MAX_SLICE);
    #[cfg(target_os = "linux")]
    {
        linux::request_slice(slice)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = slice;
        Ok(SliceOutcome::NotSupported)
    }
}

/// The slice the calling thread runs in, when the kernel reports one
/// (Linux 6.12 and later).
///
/// # Errors
///
/// [`SchedError::Syscall`] when the kernel refuses the call.
pub fn current_slice() -> Result<Option<Duration>, SchedError> {
    #[cfg(target_os = "linux")]
    {
        linux::current_slice()
    }
    #[cfg(not(target_os = "linux"))]
    {
        Ok(None)
    }
}
