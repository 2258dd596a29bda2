//! `pfsctl`: command-line CSI client; everything lives in the library.

fn main() -> std::process::ExitCode {
    pfsctl::main_entry()
}
