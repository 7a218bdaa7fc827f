//! The command line: clap's argument types live here and nowhere else. The
//! verbs are the table in `run`; each verb's flags and its resolution live
//! in the module named after it (`build` for basefs, overlay, initrd and
//! play). Each command is parsed raw, resolved into the library's request (every path
//! made absolute once, against the directory mkimage was started in), and
//! run; the error is printed once as `mkimage: …` with exit code 2 for a
//! usage or config mistake and 1 for a failed build.

mod args;
mod boot_test;
mod build;
mod cache;
mod check;
mod docs;
mod iso;
mod keys;
mod lock;
mod nodes;
mod paths;
mod power;
mod publish;
mod serve;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use args::{Cli, Command};
use mkimage::image::Kind;
use paths::absolute;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    mkimage::progress::init_logging(cli.verbose);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("mkimage: {}", mkimage::progress::format_error(&err));
            ExitCode::from(mkimage::exit_code(&err) as u8)
        }
    }
}

/// The verbs: each one's flags and the few lines that turn them into a
/// library request live in the module named after it.
fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Basefs(a) => build::build(Kind::Basefs, a.build, (a.save, a.from)),
        Command::Overlay(a) => build::build(Kind::Overlay, a, (None, None)),
        Command::Initrd(a) => build::build(Kind::Initrd, a, (None, None)),
        Command::Play(a) => build::play(a),
        Command::Check(a) => check::check(a),
        Command::Lock(a) => lock::lock(a),
        Command::Serve(a) => serve::serve(&a),
        Command::Nodes(a) => nodes::nodes(&a),
        Command::Publish(a) => publish::publish(&a),
        Command::Inspect { file, summary } => mkimage::inspect::run(&absolute(&file)?, summary),
        Command::BootTest(a) => boot_test::boot_test(a),
        Command::Iso(a) => iso::iso(a),
        Command::Keys { command } => keys::keys(command),
        Command::Power(a) => power::power(&a),
        Command::Reprovision(a) => power::reprovision(&a),
        Command::Man(a) => docs::man(&a, Cli::command()),
        Command::Docs(a) => docs::docs(&a, Cli::command()),
        Command::Cache(a) => cache::cache(&a),
    }
}
