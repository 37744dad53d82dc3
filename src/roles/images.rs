//! `rampart images import|ls|rm`: the node's local image store from the command line (the
//! same store the agent runs containers from, `DATA_DIR/content`).

use std::io::IsTerminal;

use anyhow::Context;

use crate::cli::ImagesCommand;
use crate::kubelet::runtime::image::{self, import, Store};

pub fn run(cmd: ImagesCommand) -> anyhow::Result<()> {
    match cmd {
        ImagesCommand::Import { files, store } => {
            let s = open(&store.data_dir)?;
            let tty = std::io::stderr().is_terminal();
            for f in files {
                if tty {
                    eprint!("importing {} ...", f.display());
                }
                let imported = import::import(&s, &f);
                if tty {
                    eprintln!();
                }
                let imported =
                    imported.with_context(|| format!("cannot import {}", f.display()))?;
                for i in imported {
                    if i.names.is_empty() {
                        println!("Loaded image ID: {}", i.id);
                    }
                    for n in &i.names {
                        println!("Loaded image: {n}");
                    }
                }
            }
            Ok(())
        }
        ImagesCommand::Ls { quiet, store } => {
            let s = open(&store.data_dir)?;
            let images = s.list()?;
            if quiet {
                for i in &images {
                    println!("{}", i.id);
                }
                return Ok(());
            }
            let rows = image::table(&images);
            let w = rows
                .iter()
                .map(|r| r["name"].len())
                .max()
                .unwrap_or(5)
                .max(5);
            println!("{:<w$}  {:<12}  SIZE", "IMAGE", "IMAGE ID");
            for r in rows {
                println!("{:<w$}  {:<12}  {}", r["name"], r["id"], r["size"]);
            }
            Ok(())
        }
        ImagesCommand::Rm { images, store } => {
            let s = open(&store.data_dir)?;
            for i in images {
                for line in s.remove(&i)? {
                    println!("{line}");
                }
            }
            Ok(())
        }
    }
}

fn open(data_dir: &std::path::Path) -> anyhow::Result<Store> {
    Ok(Store::open(&data_dir.join("content"))?)
}
