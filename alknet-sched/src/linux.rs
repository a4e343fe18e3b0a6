//! `sched_getattr(2)` and `sched_setattr(2)`, which libc declares no
//! functions for: the raw system calls with the kernel's `struct
//! sched_attr` (its first, 48-byte version, which every kernel since 3.14
//! takes).

use std::io;
use std::mem::size_of;
use std::time::Duration;

use crate::{SchedError, SliceOutcome};

/// `struct sched_attr` as `include/uapi/linux/sched/types.h` lays it out
/// (`SCHED_ATTR_SIZE_VER0`). For the fair policies, `sched_runtime` is the
/// requested slice in nanoseconds (Linux 6.12 and later).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct SchedAttr {
    size: u32,
    sched_policy: u32,
    sched_flags: u64,
    sched_nice: i32,
    sched_priority: u32,
    sched_runtime: u64,
    sched_deadline: u64,
    sched_period: u64,
}

const ATTR_SIZE: u32 = 48;
const _: () = assert!(size_of::<SchedAttr>() == ATTR_SIZE as usize);

/// The fair policies, the only ones whose slice may be asked for.
const SCHED_OTHER: u32 = 0;
const SCHED_BATCH: u32 = 3;

fn is_fair(policy: u32) -> bool {
    matches!(policy, SCHED_OTHER | SCHED_BATCH)
}

/// The one flag of the thread's own that a `sched_setattr` must repeat to
/// keep.
const SCHED_FLAG_RESET_ON_FORK: u64 = 0x01;

fn get_attr() -> Result<SchedAttr, SchedError> {
    let mut attr = SchedAttr::default();
    // SAFETY: the kernel writes at most `ATTR_SIZE` bytes into `attr`, a
    // live, writable value of exactly that size; pid 0 is the caller.
    let result = unsafe { libc::syscall(libc::SYS_sched_getattr, 0, &raw mut attr, ATTR_SIZE, 0) };
    if result != 0 {
        return Err(SchedError::Syscall {
            call: "sched_getattr",
            source: io::Error::last_os_error(),
        });
    }
    Ok(attr)
}

fn set_attr(attr: &SchedAttr) -> Result<(), SchedError> {
    // SAFETY: the kernel reads `attr.size` (= `ATTR_SIZE`) bytes from a live
    // value of that size; pid 0 is the caller.
    let result = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &raw const *attr, 0) };
    if result != 0 {
        return Err(SchedError::Syscall {
            call: "sched_setattr",
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

pub(crate) fn request_slice(slice: Duration) -> Result<SliceOutcome, SchedError> {
    let current = get_attr()?;
    if !is_fair(current.sched_policy) {
        return Ok(SliceOutcome::LeftAlone);
    }
    // Repeat the policy and nice value: sched_setattr sets all of them.
    let wanted = SchedAttr {
        size: ATTR_SIZE,
        sched_policy: current.sched_policy,
        sched_flags: current.sched_flags & SCHED_FLAG_RESET_ON_FORK,
        sched_nice: current.sched_nice,
        sched_runtime: nanos(slice),
        ..SchedAttr::default()
    };
    set_attr(&wanted)?;
    // Kernels without custom slices take the call and ignore the runtime;
    // those with them report the slice back.
    match get_attr()?.sched_runtime {
        granted if granted == wanted.sched_runtime => {
            Ok(SliceOutcome::Applied(Duration::from_nanos(granted)))
        }
        _ => Ok(SliceOutcome::NotSupported),
    }
}

pub(crate) fn current_slice() -> Result<Option<Duration>, SchedError> {
    let attr = get_attr()?;
    Ok((is_fair(attr.sched_policy) && attr.sched_runtime > 0)
        .then(|| Duration::from_nanos(attr.sched_runtime)))
}

#[cfg(test)]
mod tests {
    use std::thread;

    use super::*;
    use crate::{MAX_SLICE, MIN_SLICE, request_short_slices};

    /// Runs `test` on a thread of its own, whose scheduling it may change.
    fn on_own_thread<T: Send + 'static>(test: impl FnOnce() -> T + Send + 'static) -> T {
        thread::spawn(test).join().expect("the test thread")
    }

    /// The slice /proc shows for the calling thread, in nanoseconds.
    fn proc_slice() -> Option<u64> {
        let sched = std::fs::read_to_string("/proc/thread-self/sched").ok()?;
        let line = sched.lines().find(|line| line.starts_with("se.slice"))?;
        line.split(':').nth(1)?.trim().parse().ok()
    }

    #[test]
    fn a_short_slice_is_what_the_kernel_then_schedules_the_thread_with() {
        let (outcome, shown, inherited) = on_own_thread(|| {
            let outcome = request_short_slices(Duration::from_micros(250)).unwrap();
            let inherited = thread::spawn(proc_slice).join().unwrap();
            (outcome, proc_slice(), inherited)
        });
        match outcome {
            SliceOutcome::Applied(slice) => {
                assert_eq!(slice, Duration::from_micros(250));
                assert_eq!(shown, Some(250_000), "as /proc shows it");
                assert_eq!(inherited, Some(250_000), "threads started later inherit it");
            }
            // Before Linux 6.12 the kernel takes the call and keeps no slice.
            SliceOutcome::NotSupported => assert_ne!(shown, Some(250_000)),
            SliceOutcome::LeftAlone => panic!("a test thread runs under SCHED_OTHER"),
        }
    }

    #[test]
    fn requests_outside_the_kernels_range_are_brought_into_it() {
        let (short, long) = on_own_thread(|| {
            let short = request_short_slices(Duration::from_nanos(1)).unwrap();
            let long = request_short_slices(Duration::from_secs(5)).unwrap();
            (short, long)
        });
        if short != SliceOutcome::NotSupported {
            assert_eq!(short, SliceOutcome::Applied(MIN_SLICE));
            assert_eq!(long, SliceOutcome::Applied(MAX_SLICE));
        }
    }

    #[test]
    fn the_threads_nice_value_is_kept() {
        let (before, after) = on_own_thread(|| {
            // Raising nice needs no privilege.
            let mut nicer = get_attr().unwrap();
            nicer.size = ATTR_SIZE;
            nicer.sched_nice = 7;
            set_attr(&nicer).unwrap();
            let before = get_attr().unwrap().sched_nice;
            request_short_slices(MIN_SLICE).unwrap();
            (before, get_attr().unwrap().sched_nice)
        });
        assert_eq!((before, after), (7, 7));
    }

    #[test]
    fn a_thread_under_an_idle_policy_is_left_alone() {
        const SCHED_IDLE: u32 = 5;
        let (outcome, policy, slice) = on_own_thread(|| {
            // Moving to SCHED_IDLE needs no privilege.
            let idle = SchedAttr {
                size: ATTR_SIZE,
                sched_policy: SCHED_IDLE,
                ..SchedAttr::default()
            };
            set_attr(&idle).unwrap();
            let outcome = request_short_slices(MIN_SLICE).unwrap();
            (
                outcome,
                get_attr().unwrap().sched_policy,
                current_slice().unwrap(),
            )
        });
        assert_eq!(outcome, SliceOutcome::LeftAlone);
        assert_eq!(policy, SCHED_IDLE);
        assert_eq!(
            slice, None,
            "no slice to speak of outside the fair policies"
        );
    }
}
