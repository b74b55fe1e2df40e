//! The `rbuild` binary: everything lives in the library; see `rbuild::cli`.

/// mimalloc instead of glibc's malloc: planning a large Dockerfile is mostly small, short-lived
/// allocations (strings per word, step and history line), and with glibc's allocator malloc
/// and free were a third of the front end's time (see BENCHMARKS.md, "Front end, fifth round";
/// `benches/frontend.rs` measures with the same allocator).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    if let Some(code) = rbuild::exec::helper_entry() {
        return code;
    }
    rbuild::cli::main()
}
