fn main() -> std::process::ExitCode {
    dhurandhar_cli::main_with_args(std::env::args_os())
}
