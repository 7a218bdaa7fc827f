//! Append a dm-verity hash tree to a file with mkimage's writer, for
//! `bench/verify.sh` (which times it against `veritysetup format`):
//!
//!     cargo run --release --example verity -- FILE
//!
//! Prints `ROOT_HASH:HASH_OFFSET`, as the boot script passes it.

use std::fs::OpenOptions;

fn main() -> std::process::ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: verity FILE");
        return std::process::ExitCode::from(2);
    };
    let appended = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .and_then(|mut f| mkimage::archive::verity::append_tree(&mut f));
    match appended {
        Ok(v) => {
            println!("{}", v.cmdline());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("verity: {path}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
