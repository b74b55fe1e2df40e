//! The `rbuild` binary: everything lives in the library; see `rbuild::cli`.

fn main() -> std::process::ExitCode {
    rbuild::cli::main()
}
