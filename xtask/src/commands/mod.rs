//! The xtask commands.

pub(crate) mod addon;
pub(crate) mod bench;
pub(crate) mod test;
