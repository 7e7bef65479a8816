#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    asm_canary::cli::main()
}
