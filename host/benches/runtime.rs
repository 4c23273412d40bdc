//! The runtime benchmark (`make bench`); being written.
fn main() {}
