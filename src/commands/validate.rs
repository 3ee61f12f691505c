//! `lifeboat validate` and `lifeboat schema`: offline, no registry, no cluster.

use super::{diagnostics_json, exit, json, write_out};
use crate::cli::{Output, ValidateArgs};
use crate::desired::{self, DirectorySource, LoadError};

pub fn validate(args: &ValidateArgs, output: Output) -> anyhow::Result<u8> {
    let source = DirectorySource::new(&args.path)?;
    let (diags, code) = match desired::load(&source) {
        Ok(state) => (state.warnings, exit::OK),
        Err(LoadError::Invalid(diags)) => (diags, exit::ERROR),
        Err(LoadError::Read(e)) => return Err(e),
    };
    let text = match output {
        Output::Json => json(&diagnostics_json(&diags, None)),
        Output::Human | Output::Markdown if code == exit::OK && diags.is_empty() => {
            format!("{} is valid\n", args.path.display())
        }
        Output::Human | Output::Markdown if code == exit::OK => format!("{} is valid\n{diags}\n", args.path.display()),
        Output::Human | Output::Markdown => format!("{diags}\n"),
    };
    write_out(&text)?;
    Ok(code)
}

pub fn schema() -> anyhow::Result<u8> {
    write_out(&crate::schema::render())?;
    Ok(exit::OK)
}
