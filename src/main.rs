fn main() -> std::process::ExitCode {
    rsing::cli::main()
}
