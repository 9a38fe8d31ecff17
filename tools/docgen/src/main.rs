//! `crm-events-docgen`: writes `docs/src/configuration.md`, the configuration
//! reference, from the places the settings are defined — `spin.toml`'s `[variables]`
//! (with the comment above each) for the app, and the `clap` definitions of the
//! sidecar, the outbox publisher and the host for the native processes.
//!
//! `crm-events-docgen` rewrites the page; `crm-events-docgen --check` fails when the
//! committed page differs from what it would write (a test runs that check).

mod page;

use anyhow::{bail, Context, Result};
use std::path::PathBuf;

fn main() -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let check = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--check") => true,
        Some(other) => bail!("unknown argument {other:?} (usage: crm-events-docgen [--check])"),
    };
    let manifest = std::fs::read_to_string(root.join("spin.toml")).context("reading spin.toml")?;
    let written = page::configuration(&manifest)?;
    let path = root.join(page::PAGE);
    if check {
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed != written {
            bail!(
                "{} is out of date: run `cargo run -p crm-events-docgen` and commit it",
                page::PAGE
            );
        }
        println!("{} is current", page::PAGE);
    } else {
        std::fs::write(&path, written).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", page::PAGE);
    }
    Ok(())
}
