//! Link settings for a Node.js addon (N-API symbols resolved by node at load).

fn main() {
    napi_build::setup();
}
