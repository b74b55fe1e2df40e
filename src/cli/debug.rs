//! `rbuild debug ...`: looking inside rbuild. `debug parse` prints the parser's view of a
//! Dockerfile, as BuildKit's dump (`text`) or as the stable JSON form of `Node` (`json`).

use std::io::{Read, Write};

use anyhow::{Context, anyhow};

use super::Globals;
use super::args::{DebugCommand, DebugParseArgs, ParseFormat};
use crate::dockerfile;

pub(super) fn run(cmd: DebugCommand, _globals: &Globals) -> anyhow::Result<()> {
    match cmd {
        DebugCommand::Parse(args) => parse(&args),
        DebugCommand::CliReference => super::completion::print_cli_reference(),
    }
}

fn parse(args: &DebugParseArgs) -> anyhow::Result<()> {
    let (name, bytes) = if args.file == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading the Dockerfile from stdin")?;
        ("<stdin>".to_string(), buf)
    } else {
        let buf = std::fs::read(&args.file)
            .with_context(|| format!("reading Dockerfile {}", args.file))?;
        (args.file.clone(), buf)
    };
    // BuildKit works on bytes; invalid UTF-8 is shown as U+FFFD rather than refused.
    let source = String::from_utf8_lossy(&bytes);
    let parsed = dockerfile::parse(&source)
        .map_err(|e| anyhow!("{}", e.render(&name, &source).trim_end()))?;
    for warning in &parsed.warnings {
        eprintln!("warning: {name}: {warning}");
    }
    let out = match args.format {
        ParseFormat::Text => dockerfile::dump(&parsed),
        ParseFormat::Json => {
            let mut s = serde_json::to_string_pretty(&parsed.nodes)?;
            s.push('\n');
            s
        }
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_bytes())?;
    stdout.flush()?;
    Ok(())
}
