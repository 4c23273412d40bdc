//! Build helpers for `make`.
//!
//! `cargo run -p xtask -- componentize IN.wasm OUT.wasm` wraps a core module built for
//! `wasm32-unknown-unknown` (carrying wit-bindgen's component-type section) into a
//! component with `wit-component`. The encoder is deterministic, so the same input gives
//! byte-identical output.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [cmd, input, output] if cmd == "componentize" => componentize(input.into(), output.into()),
        _ => bail!("usage: xtask componentize IN.wasm OUT.wasm"),
    }
}

fn componentize(input: PathBuf, output: PathBuf) -> Result<()> {
    let module = std::fs::read(&input)
        .with_context(|| format!("reading core module `{}` (run `make policy` to build it)", input.display()))?;
    let component = wit_component::ComponentEncoder::default()
        .module(&module)
        .with_context(|| format!("`{}` is not a module with a component-type section", input.display()))?
        .validate(true)
        .encode()
        .with_context(|| format!("encoding `{}` as a component", input.display()))?;
    if let Some(dir) = output.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating `{}`", dir.display()))?;
    }
    std::fs::write(&output, &component).with_context(|| format!("writing `{}`", output.display()))?;
    eprintln!("componentized {} -> {} ({} bytes)", input.display(), output.display(), component.len());
    Ok(())
}
