//! `evald languages`: list the installed languages, install their packages.

use std::path::Path;
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};
use evald_engine::catalogue::{self, Catalogue};

/// Prints the installed languages with the versions detected on this host.
pub fn list(dir: &Path, json: bool) -> Result<ExitCode> {
    let catalogue = Catalogue::load_dir(dir).with_context(|| format!("loading {}", dir.display()))?;
    let installed = catalogue::detect_installed(&catalogue);
    if json {
        let list: Vec<_> = installed
            .iter()
            .map(|l| {
                serde_json::json!({
                    "id": l.spec.id,
                    "name": l.spec.name,
                    "version": l.version.to_string(),
                    "aliases": l.spec.aliases,
                    "compiled": l.compiled(),
                    "repl": l.spec.repl.is_some(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        println!("{:<14} {:<12} {:<9} aliases", "id", "version", "kind");
        for l in &installed {
            let kind = if l.compiled() { "compiled" } else { "script" };
            println!("{:<14} {:<12} {:<9} {}", l.spec.id, l.version, kind, l.spec.aliases.join(" "));
        }
        eprintln!("{} of {} catalogued languages installed", installed.len(), catalogue.files.len());
    }
    Ok(ExitCode::SUCCESS)
}

/// Installs the Debian and npm packages of the given languages (or all).
pub fn install(dir: &Path, ids: &[String], all: bool) -> Result<ExitCode> {
    let catalogue = Catalogue::load_dir(dir).with_context(|| format!("loading {}", dir.display()))?;
    if ids.is_empty() && !all {
        bail!("name the languages to install, or pass --all");
    }
    let mut chosen = Vec::new();
    for id in ids {
        let wanted = id.to_ascii_lowercase();
        let Some(f) = catalogue
            .files
            .iter()
            .find(|f| f.id == wanted || f.aliases.iter().any(|a| a.eq_ignore_ascii_case(&wanted)))
        else {
            bail!("unknown language {id:?} (see `evald languages --help`)");
        };
        chosen.push(f);
    }
    if all {
        chosen = catalogue.files.iter().collect();
    }
    let mut debs: Vec<&str> = chosen.iter().flat_map(|f| f.packages.iter().map(String::as_str)).collect();
    let mut npm: Vec<&str> = chosen.iter().flat_map(|f| f.npm.iter().map(String::as_str)).collect();
    debs.sort_unstable();
    debs.dedup();
    npm.sort_unstable();
    npm.dedup();
    if !debs.is_empty() {
        run(Command::new("apt-get").arg("update"))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&debs)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    if !npm.is_empty() {
        run(Command::new("npm").args(["install", "-g"]).args(&npm))?;
    }
    println!("installed packages for {} languages", chosen.len());
    Ok(ExitCode::SUCCESS)
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}
