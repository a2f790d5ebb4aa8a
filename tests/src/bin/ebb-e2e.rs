//! The `ebb` command, built inside the tests crate so that its end-to-end tests
//! start the binary of the very build they belong to (see `process::ebb_binary`).

fn main() -> std::process::ExitCode {
    ebb_shared::allocator::limit_malloc_arenas();
    ebb_coordinator::cli::main()
}
