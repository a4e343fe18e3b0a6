//! [`XtaskError`]: why a harness step (a build, a process, a wait) failed.

use std::io;

/// What went wrong while building, starting or driving a program.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum XtaskError {
    /// An I/O operation failed.
    #[error("{what}: {error}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        error: io::Error,
    },

    /// A program the tests need is not installed.
    #[error("`{tool}` is needed but was not found; install it ({hint})")]
    MissingTool {
        /// The program's name.
        tool: String,
        /// How to get it.
        hint: String,
    },

    /// Something did not happen in time.
    #[error("timed out after {seconds:.1}s waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long we waited.
        seconds: f64,
    },

    /// A program ran but did not do what was expected.
    #[error("{0}")]
    Failed(String),
}

impl XtaskError {
    /// A closure that wraps an I/O error with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        let what = what.into();
        move |error| XtaskError::Io { what, error }
    }
}
