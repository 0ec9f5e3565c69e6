fn main() -> std::process::ExitCode {
    sml::cli::main()
}
