//! The CLI's own documentation, generated from its clap definitions so that
//! it cannot drift from `--help`: shell completions and man pages.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};
use clap::{Command, CommandFactory};
use clap_complete::Shell;

use crate::Cli;

/// Prints the completion script for `shell`.
pub fn completions(shell: Shell) -> Result<()> {
    let mut out = std::io::stdout().lock();
    clap_complete::generate(shell, &mut Cli::command(), "udptrace", &mut out);
    out.flush().context("writing the completions")
}

/// Writes `udptrace.1` and a `udptrace-SUBCOMMAND.1` for each subcommand
/// into `dir`, and names each file written.
pub fn man_pages(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut cli = Cli::command();
    cli.build();
    write_page(dir, "udptrace", cli.clone())?;
    // `help` is clap's own; its page would only say what `--help` does.
    for sub in cli
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        // Built, a subcommand displays as `udptrace-count`.
        let name = sub.get_display_name().unwrap_or(sub.get_name()).to_string();
        write_page(dir, &name, sub.clone())?;
    }
    Ok(())
}

fn write_page(dir: &Path, name: &str, cmd: Command) -> Result<()> {
    let path = dir.join(format!("{name}.1"));
    let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = BufWriter::new(file);
    clap_mangen::Man::new(cmd)
        .render(&mut out)
        .and_then(|()| out.flush())
        .with_context(|| format!("writing {}", path.display()))?;
    println!("{}", path.display());
    Ok(())
}
