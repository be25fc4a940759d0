//! `aurora-cli`: the operator's one tool. All logic lives in the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    aurora_cli::main()
}
