//! alknet for Node.js, the native half: [`connect`](connect::connect)
//! opens one SSH session with one channel; [`serve`](serve::serve) runs a
//! server whose admitted channels JavaScript may take
//! ([`Server::next_connection`](serve::Server::next_connection)); a
//! [`Channel`](channel::Channel) is read and written with promises.
//!
//! The JavaScript half of the npm package (`alknet.js`, `lib/`) wraps
//! channels in Node `Duplex` streams, gives errors their `code`, checks
//! option names, and speaks the call protocol on an `EventTarget`. This
//! crate is built by `napi build` (from `@napi-rs/cli`), which also writes
//! the loader and the native type declarations.
//!
//! Feature `iroh` (on by default): connect to and listen on iroh QUIC.

// Public so that what is exported to JavaScript is reachable in Rust too
// (rustdoc, and the unreachable-pub lint).
pub mod channel;
pub mod connect;
mod error;
pub mod serve;
