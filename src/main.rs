//! The `mkimage` binary: the CLI layer parses and resolves the arguments,
//! calls the library, and prints the error once.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
