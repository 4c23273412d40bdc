//! The `rollout` binary: a thin shell over [`rollout::cli`].

fn main() -> std::process::ExitCode {
    rollout::cli::main()
}
