//! Insists that the reference policy component exists before the host embeds it
//! (`rollout::runtime::BUNDLED_POLICY`).

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let policy = manifest.join("../target/wasm/rollout_policy.wasm");
    println!("cargo:rerun-if-changed={}", policy.display());
    println!("cargo:rerun-if-changed=build.rs");
    if !policy.is_file() {
        eprintln!(
            "error: the reference policy component `{}` is missing; run `make policy` first \
             (it builds the policy crate for wasm32-unknown-unknown and wraps it into a component)",
            policy.display()
        );
        std::process::exit(1);
    }
}
