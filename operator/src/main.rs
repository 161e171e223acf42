//! `maos-operator`: the MAOS control plane. Today it prints the CRDs; the controllers arrive with
//! the operator issue.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

/// The MAOS operator.
#[derive(Parser)]
#[command(
    version,
    about = "MAOS: runs many Claude agents in parallel on one goal"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions of every MAOS kind as YAML.
    Crds {
        /// Write one file per CRD (e.g. `tasks.maos.dev.yaml`) into this directory instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crds { dir } => print_crds(dir),
    }
}

fn print_crds(dir: Option<PathBuf>) -> anyhow::Result<()> {
    let crds = maos_core::api::crds();
    match dir {
        None => {
            let documents = crds
                .iter()
                .map(maos_core::api::crd_yaml)
                .collect::<Result<Vec<_>, _>>()?;
            print!("{}", documents.join("---\n"));
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            for crd in &crds {
                let path = dir.join(maos_core::api::crd_file_name(crd));
                std::fs::write(&path, maos_core::api::crd_yaml(crd)?)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
        }
    }
    Ok(())
}
