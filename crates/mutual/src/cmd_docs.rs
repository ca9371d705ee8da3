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
    let mut out = crate::errors::ReportOut(std::io::stdout().lock());
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
            let mut out = crate::errors::ReportOut(std::io::stdout().lock());
            out.write_all(&buf)
                .and_then(|()| out.flush())
                .context("cannot write the man page")?;
        }
        Some(dir) => {
            if dir.exists() && !dir.is_dir() {
                anyhow::bail!(
                    "--out {} is a file: give a directory (created if missing)",
                    dir.display()
                );
            }
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

    /// Every visible command of `mutual`, built, with its path (the top one has an empty path).
    fn commands() -> Vec<(Vec<String>, clap::Command)> {
        fn walk(
            cmd: &clap::Command,
            path: Vec<String>,
            out: &mut Vec<(Vec<String>, clap::Command)>,
        ) {
            for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
                let mut p = path.clone();
                p.push(sub.get_name().to_string());
                walk(sub, p, out);
            }
            out.push((path, cmd.clone()));
        }
        let mut cmd = crate::Cli::command();
        cmd.build();
        let mut out = Vec::new();
        walk(&cmd, Vec::new(), &mut out);
        out
    }

    /// Every command, flag and argument says what it is for: `--help`, the man pages and the
    /// completions are generated from these texts, and a missing one is a blank in all three.
    #[test]
    fn every_command_and_argument_has_help() {
        let mut missing = Vec::new();
        for (path, cmd) in commands() {
            let is_sub = !path.is_empty();
            let path = format!("mutual {}", path.join(" "));
            if is_sub && cmd.get_about().is_none() && cmd.get_long_about().is_none() {
                missing.push(format!("{path} (the command)"));
            }
            for a in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    let name = a
                        .get_long()
                        .map_or_else(|| format!("<{}>", a.get_id()), |long| format!("--{long}"));
                    missing.push(format!("{path} {name}"));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "{} without a help text:\n{}",
            missing.len(),
            missing.join("\n")
        );
    }

    fn is_builtin(a: &clap::Arg) -> bool {
        matches!(a.get_id().as_str(), "help" | "version")
    }

    /// The words that give `a` a value clap's parser accepts (a flag alone, an option and a
    /// value, a positional's value), or None when no candidate value parses.
    fn words(cmd: &clap::Command, a: &clap::Arg) -> Option<Vec<String>> {
        let flag = a.get_long().map(|l| format!("--{l}"));
        if !a.get_action().takes_values() {
            return flag.map(|f| vec![f]);
        }
        let mut candidates: Vec<String> = a
            .get_possible_values()
            .iter()
            .map(|v| v.get_name().to_string())
            .chain(
                a.get_default_values()
                    .iter()
                    .map(|v| v.to_string_lossy().into_owned()),
            )
            .collect();
        candidates.extend(
            [
                "1",
                "1h",
                "x",
                "dns:x.example",
                "127.0.0.1:1",
                "https://127.0.0.1:1",
                "unix:///run/x.sock",
                "spiffe://t.example/x",
                "/tmp/x",
                "a={cn}",
                "a=dns:{cn}",
                "10/s",
            ]
            .map(String::from),
        );
        candidates
            .into_iter()
            .filter(|v| !v.is_empty())
            .find_map(|v| {
                let w = match &flag {
                    Some(f) => vec![f.clone(), v],
                    None => vec![v],
                };
                let bad_value = matches!(
                    parse(cmd, &w).map_err(|e| e.kind()),
                    Err(clap::error::ErrorKind::InvalidValue
                        | clap::error::ErrorKind::ValueValidation)
                );
                (!bad_value).then_some(w)
            })
    }

    fn parse(cmd: &clap::Command, words: &[String]) -> Result<clap::ArgMatches, clap::Error> {
        let argv = std::iter::once(cmd.get_name().to_string()).chain(words.iter().cloned());
        cmd.clone().try_get_matches_from(argv)
    }

    /// The arguments a parse of `words` says are missing (empty when it parses; None for any
    /// other error).
    fn missing<'c>(cmd: &'c clap::Command, words: &[String]) -> Option<Vec<&'c clap::Arg>> {
        let e = match parse(cmd, words) {
            Ok(_) => return Some(Vec::new()),
            Err(e) if e.kind() == clap::error::ErrorKind::MissingRequiredArgument => e,
            Err(_) => return None,
        };
        let Some(clap::error::ContextValue::Strings(names)) =
            e.get(clap::error::ContextKind::InvalidArg)
        else {
            return None;
        };
        Some(
            cmd.get_arguments()
                .filter(|a| names.iter().any(|n| shown_as(a, n)))
                .collect(),
        )
    }

    /// Whether clap's `shown` (`--est <URL>`, `--new-key`, `<NAME>`) names `a`.
    fn shown_as(a: &clap::Arg, shown: &str) -> bool {
        match a.get_long() {
            Some(l) => shown == format!("--{l}") || shown.starts_with(&format!("--{l} ")),
            None => a.get_value_names().is_some_and(|v| {
                v.iter()
                    .any(|n| shown == format!("<{n}>") || shown == format!("[{n}]"))
            }),
        }
    }

    /// clap waives `requires = R` when R conflicts with an argument that is present
    /// (clap-rs/clap#4520): the requiring flag is then accepted and ignored. For every option of
    /// every command that needs another one R, and every argument R conflicts with, the
    /// combination (with whatever else the command requires) must be refused.
    #[test]
    fn no_requirement_is_waived_by_a_conflict() {
        let (mut checked, mut waived) = (0, Vec::new());
        for (path, c) in &commands() {
            let Some(base) = missing(c, &[]) else {
                continue;
            };
            for a in c
                .get_arguments()
                .filter(|a| !is_builtin(a) && !a.is_positional())
            {
                let Some(wa) = words(c, a) else { continue };
                let Some(with_a) = missing(c, &wa) else {
                    continue;
                };
                let needed = with_a
                    .iter()
                    .filter(|r| !base.iter().any(|b| b.get_id() == r.get_id()));
                for r in needed {
                    for conflict in c.get_arg_conflicts_with(r) {
                        if conflict.get_id() == a.get_id() {
                            continue;
                        }
                        let Some(wc) = words(c, conflict) else {
                            continue;
                        };
                        checked += 1;
                        // Fill in what else is missing (never R) until R alone is missing,
                        // another error refuses it, or it parses (R waived).
                        let mut w = [wa.clone(), wc].concat();
                        for _ in 0..4 {
                            match missing(c, &w) {
                                Some(m) if m.is_empty() => {
                                    waived.push(format!(
                                        "mutual {} {}: {} needs {} but is accepted without it",
                                        path.join(" "),
                                        w.join(" "),
                                        a.get_id(),
                                        r.get_id()
                                    ));
                                    break;
                                }
                                Some(m) if m.iter().any(|x| x.get_id() != r.get_id()) => {
                                    let fill: Option<Vec<Vec<String>>> = m
                                        .iter()
                                        .filter(|x| x.get_id() != r.get_id())
                                        .map(|x| words(c, x))
                                        .collect();
                                    let Some(fill) = fill else { break };
                                    w.extend(fill.into_iter().flatten());
                                }
                                _ => break,
                            }
                        }
                    }
                }
            }
        }
        assert!(
            checked >= 5,
            "only {checked} combinations checked: is the probe still finding them?"
        );
        assert!(waived.is_empty(), "{}", waived.join("\n"));
    }
}
