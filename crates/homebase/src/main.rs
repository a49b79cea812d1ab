//! The `homebase` binary: parse, run, exit code. The work lives in the library.

fn main() -> std::process::ExitCode {
    homebase::main()
}
