//! The xtask commands.

pub(crate) mod bench;
pub(crate) mod test;
