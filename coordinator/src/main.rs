fn main() -> std::process::ExitCode {
    ebb_coordinator::cli::main()
}
