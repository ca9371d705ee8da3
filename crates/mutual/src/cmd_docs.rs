//! `mutual completions SHELL` and `mutual man`: shell completions and man pages generated from
//! the clap definitions themselves, so they can never drift from the flags the binary accepts.
//! Packagers run both at build time and install the output (completions in the shell's
//! completion directory, pages in man1).
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;

#[derive(clap::Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to write a completion script for: bash, zsh, fish, elvish, powershell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(clap::Args, Debug)]
pub struct ManArgs {
    /// Write one page per command into DIR (mutual.1, mutual-cert-issue.1, ...), creating DIR.
    /// Without it, mutual.1 goes to stdout.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Prints the completion script, e.g. `source <(mutual completions bash)`.
pub fn run_completions(a: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut cmd = crate::Cli::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(a.shell, &mut cmd, "mutual", &mut out);
    out.flush().context("cannot write the completion script")?;
    Ok(ExitCode::SUCCESS)
}

pub fn run_man(a: ManArgs) -> anyhow::Result<ExitCode> {
    let mut cmd = crate::Cli::command();
    // build() fills in what a page needs: each subcommand's display name (mutual-cert-issue),
    // its full bin name for the synopsis, and the propagated version.
    cmd.build();
    match a.out {
        None => {
            let mut buf = Vec::new();
            page(cmd)
                .render(&mut buf)
                .context("cannot render the man page")?;
            let mut out = std::io::stdout().lock();
            out.write_all(&buf)
                .and_then(|()| out.flush())
                .context("cannot write the man page")?;
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let mut written = 0usize;
            write_pages(&cmd, &dir, &mut written)?;
            eprintln!("wrote {written} man pages to {}", dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A page whose footer names the program (`mutual 0.1.0`), not the subcommand (`issue 0.1.0`).
fn page(cmd: clap::Command) -> clap_mangen::Man {
    clap_mangen::Man::new(cmd).source(format!("mutual {}", env!("CARGO_PKG_VERSION")))
}

/// Writes the page of `cmd` and, recursively, of each visible subcommand (not clap's `help`).
fn write_pages(cmd: &clap::Command, dir: &Path, written: &mut usize) -> anyhow::Result<()> {
    let name = cmd
        .get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_string();
    let path = dir.join(format!("{name}.1"));
    let mut buf = Vec::new();
    page(cmd.clone())
        .render(&mut buf)
        .with_context(|| format!("cannot render the man page of {name}"))?;
    std::fs::write(&path, &buf).with_context(|| format!("cannot write {}", path.display()))?;
    *written += 1;
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        write_pages(sub, dir, written)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every command, flag and argument says what it is for: `--help`, the man pages and the
    /// completions are generated from these texts, and a missing one is a blank in all three.
    #[test]
    fn every_command_and_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    let name = a
                        .get_long()
                        .map_or_else(|| format!("<{}>", a.get_id()), |long| format!("--{long}"));
                    missing.push(format!("{path} {name}"));
                }
            }
            for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
                let sub_path = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() && sub.get_long_about().is_none() {
                    missing.push(format!("{sub_path} (the command)"));
                }
                walk(sub, &sub_path, missing);
            }
        }
        let mut cmd = crate::Cli::command();
        cmd.build();
        let mut missing = Vec::new();
        walk(&cmd, "mutual", &mut missing);
        assert!(
            missing.is_empty(),
            "{} without a help text:\n{}",
            missing.len(),
            missing.join("\n")
        );
    }
}
