//! The `rbuild` binary: everything lives in the library; see `rbuild::cli`.

fn main() -> std::process::ExitCode {
    if let Some(code) = rbuild::exec::helper_entry() {
        return code;
    }
    rbuild::cli::main()
}
