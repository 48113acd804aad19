//! `generate`: man pages and shell completions, made from the same clap definitions that
//! parse the command line, for packagers (deploy/README.md says where they go).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use clap_complete::Shell;

#[derive(Subcommand, Debug)]
pub(crate) enum GenerateCmd {
    /// Man pages (roff, section 1): the top page on stdout, or with --dir one page per command
    /// and subcommand (NAME.1, NAME-SUBCOMMAND.1, ...) written into DIR
    Man {
        /// Write every page into this directory (created if missing)
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// The bash completion script, on stdout
    CompleteBash,
    /// The zsh completion script (a #compdef file), on stdout
    CompleteZsh,
    /// The fish completion script, on stdout
    CompleteFish,
}

/// Writes what `what` asks for about the command line `cli`.
pub(super) fn run(what: &GenerateCmd, mut cli: clap::Command) -> Result<ExitCode> {
    let name = cli.get_name().to_string();
    let shell = match what {
        GenerateCmd::Man { dir: Some(dir) } => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(cli, dir)
                .with_context(|| format!("cannot write the man pages into {}", dir.display()))?;
            println!("man pages written into {}", dir.display());
            return Ok(ExitCode::SUCCESS);
        }
        GenerateCmd::Man { dir: None } => {
            let mut out = Vec::new();
            // As generate_to renders it: no page refers to a `help` subcommand.
            clap_mangen::Man::new(cli.disable_help_subcommand(true)).render(&mut out)?;
            std::io::stdout().write_all(&out)?;
            return Ok(ExitCode::SUCCESS);
        }
        GenerateCmd::CompleteBash => Shell::Bash,
        GenerateCmd::CompleteZsh => Shell::Zsh,
        GenerateCmd::CompleteFish => Shell::Fish,
    };
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cli, name, &mut out);
    std::io::stdout().write_all(&out)?;
    Ok(ExitCode::SUCCESS)
}
