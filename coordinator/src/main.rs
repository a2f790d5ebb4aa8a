fn main() -> std::process::ExitCode {
    ebb_shared::allocator::limit_malloc_arenas();
    ebb_coordinator::cli::main()
}
