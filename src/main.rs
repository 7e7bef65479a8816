#![forbid(unsafe_code)]

// mimalloc: the embedded simulator parses and drops JSON for thousands of objects a second,
// where the system allocator spent a third of the time (measured with `upgrade_bench`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    asm_canary::cli::main()
}
