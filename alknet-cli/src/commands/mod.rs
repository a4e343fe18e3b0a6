//! One module per subcommand.

pub(crate) mod connect;
pub(crate) mod demo;
pub(crate) mod keygen;
pub(crate) mod serve;

/// The passphrase for encrypted keys, from the environment (never a flag:
/// flags show up in `ps`).
fn passphrase() -> Option<String> {
    std::env::var("ALKNET_PASSPHRASE").ok()
}
