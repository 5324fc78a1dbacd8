//! `nginx-medic generate-assets --out DIR` (hidden): the man pages and shell completions, made
//! from the clap definitions so they never drift from `--help`; `scripts/package` ships them.

use super::{Cli, Exit};
use anyhow::Context;
use clap::{Command, CommandFactory};
use clap_complete::Shell;
use std::path::{Path, PathBuf};

/// Write the man pages and shell completions (for packaging).
//
// Writes `DIR/man/nginx-medic.1`, one page per visible subcommand (`nginx-medic-facts.1`, …) and
// `DIR/completions/{nginx-medic.bash,_nginx-medic,nginx-medic.fish}`.
#[derive(Debug, clap::Args)]
#[command(hide = true)]
pub struct Args {
    /// The directory to write into (created when missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

/// The completion scripts and their file names, as the shells' vendor directories expect them.
const COMPLETIONS: [(Shell, &str); 3] = [
    (Shell::Bash, "nginx-medic.bash"),
    (Shell::Zsh, "_nginx-medic"),
    (Shell::Fish, "nginx-medic.fish"),
];

/// Generates every asset under `args.out`.
pub fn run(args: &Args) -> anyhow::Result<Exit> {
    let man = args.out.join("man");
    create_dir(&man)?;
    clap_mangen::generate_to(Cli::command(), &man)
        .with_context(|| format!("cannot write the man pages into `{}`", man.display()))?;

    let completions = args.out.join("completions");
    create_dir(&completions)?;
    for (shell, name) in COMPLETIONS {
        let path = completions.join(name);
        std::fs::write(&path, completion(shell))
            .with_context(|| format!("cannot write `{}`", path.display()))?;
    }
    Ok(Exit::Ok)
}

fn create_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create `{}`", dir.display()))
}

/// The completion script of one shell for the whole command tree.
fn completion(shell: Shell) -> Vec<u8> {
    let mut cmd = without_hidden(&Cli::command());
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "nginx-medic", &mut script);
    script
}

/// The command less its hidden subcommands, which `clap_complete` would offer (clap_mangen skips
/// them by itself). Only what completions use is carried over: about, version, args and the
/// visible subcommands, whole. Hidden commands live at the top level only.
fn without_hidden(cmd: &Command) -> Command {
    let visible = cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned();
    let mut trimmed = Command::new("nginx-medic")
        .args(cmd.get_arguments().cloned())
        .subcommands(visible);
    if let Some(about) = cmd.get_about() {
        trimmed = trimmed.about(about.clone());
    }
    if cmd.get_version().is_some() {
        trimmed = trimmed.version(env!("CARGO_PKG_VERSION"));
    }
    trimmed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_man_pages_and_completions() {
        let dir = tempfile::tempdir().unwrap();
        let args = Args {
            out: dir.path().join("assets"),
        };
        assert_eq!(run(&args).unwrap(), Exit::Ok);

        let page = std::fs::read_to_string(args.out.join("man/nginx-medic.1")).unwrap();
        assert!(page.starts_with(".ie \\n(.g .ds Aq"), "{page}");
        assert!(page.contains(".TH nginx-medic 1"), "{page}");
        assert!(page.contains("facts"), "{page}");
        assert!(args.out.join("man/nginx-medic-facts.1").is_file());
        // hidden commands get neither a page nor a completion
        assert!(!args.out.join("man/nginx-medic-generate-assets.1").exists());
        for (_, name) in COMPLETIONS {
            let script = std::fs::read_to_string(args.out.join("completions").join(name)).unwrap();
            assert!(script.contains("facts"), "{name}: {script}");
            assert!(!script.contains("generate-assets"), "{name}: {script}");
        }
    }
}
