//! `spillway generate-assets --out DIR` (hidden): shell completions and man
//! pages made from these very clap definitions, for the Debian package and
//! anyone packaging spillway, so they cannot drift from `--help`.

use clap::CommandFactory;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug, Clone)]
pub struct GenerateArgs {
    /// Directory to write into: completions/{spillway.bash,_spillway,spillway.fish} and man/*.1.
    #[arg(long)]
    pub out: PathBuf,
}

/// Writes the completions and one man page per command; returns the files written.
pub fn generate(args: &GenerateArgs) -> std::io::Result<Vec<PathBuf>> {
    use clap_complete::Shell;
    let mut written = Vec::new();
    let completions = args.out.join("completions");
    std::fs::create_dir_all(&completions)?;
    for (shell, name) in [
        (Shell::Bash, "spillway.bash"),
        (Shell::Zsh, "_spillway"),
        (Shell::Fish, "spillway.fish"),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut super::Cli::command(), "spillway", &mut buf);
        written.push(write(&completions.join(name), &buf)?);
    }
    let man = args.out.join("man");
    std::fs::create_dir_all(&man)?;
    let mut cmd = super::Cli::command();
    cmd.build();
    write_pages(&cmd, "spillway", &man, &mut written)?;
    Ok(written)
}

/// One page for the command, then one per visible subcommand (`spillway-rules-check.1`).
fn write_pages(
    cmd: &clap::Command,
    name: &str,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    let page = cmd.clone().display_name(name.to_string());
    let mut buf = Vec::new();
    clap_mangen::Man::new(page).render(&mut buf)?;
    written.push(write(&dir.join(format!("{name}.1")), &buf)?);
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        write_pages(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> std::io::Result<PathBuf> {
    std::fs::write(path, bytes)?;
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_completions_and_man_pages() {
        let dir = tempfile::tempdir().unwrap();
        let files = generate(&GenerateArgs {
            out: dir.path().to_path_buf(),
        })
        .unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for n in [
            "spillway.bash",
            "_spillway",
            "spillway.fish",
            "spillway.1",
            "spillway-run.1",
            "spillway-rules-check.1",
        ] {
            assert!(names.iter().any(|x| x == n), "{n} missing in {names:?}");
        }
        assert!(
            !names
                .iter()
                .any(|x| x.contains("generate") || x.contains("help")),
            "{names:?}"
        );
        let bash = std::fs::read_to_string(dir.path().join("completions/spillway.bash")).unwrap();
        assert!(
            bash.contains("--cluster.members-count"),
            "run flags complete"
        );
        let man = std::fs::read_to_string(dir.path().join("man/spillway-run.1")).unwrap();
        assert!(man.contains("cluster.member\\-num"), "{man}");
    }
}
