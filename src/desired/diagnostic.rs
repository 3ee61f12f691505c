//! Problems found in the desired state, each tied to a file and a place in it.
//!
//! A diagnostic names the file, the line and column (when the YAML parser could tell), the
//! document it belongs to and the field path inside it, says what is wrong in plain words and
//! suggests a fix. Loading collects every diagnostic before giving up, so a user fixes a broken
//! repository in one round. This module only describes and renders problems; it reads nothing.

use std::fmt;

use serde::Serialize;

/// How serious a diagnostic is. Only errors make the desired state invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// One problem, with everything a person needs to find and fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Diagnostic {
    pub severity: Severity,
    /// The file as the user knows it: a path under the directory given, or `REV:path` in Git.
    pub file: String,
    /// 1-based line, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// 1-based column, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// `Kind/name` of the document, or `document N` when it has no usable name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<String>,
    /// Field path inside the document, such as `spec.images[1].tagRules.semver`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn error(file: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            file: file.into(),
            line: None,
            column: None,
            document: None,
            path: None,
            message: message.into(),
            hint: None,
        }
    }

    pub fn at(mut self, position: Option<Position>) -> Self {
        if let Some(p) = position {
            self.line = Some(p.line);
            self.column = Some(p.column);
        }
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn warning(mut self) -> Self {
        self.severity = Severity::Warning;
        self
    }

    fn sort_key(&self) -> (&str, usize, usize, Severity, &str) {
        (&self.file, self.line.unwrap_or(0), self.column.unwrap_or(0), self.severity, &self.message)
    }
}

/// A 1-based line and column in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Diagnostic {
    /// `file:line:col: error: message`, then the document, the field path and the hint on
    /// indented lines: the first line is the form editors and CI annotators recognise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}: {}", self.severity.as_str(), self.message)?;
        match (&self.document, &self.path) {
            (Some(d), Some(p)) => write!(f, "\n    in {d}, at {p}")?,
            (Some(d), None) => write!(f, "\n    in {d}")?,
            (None, Some(p)) => write!(f, "\n    at {p}")?,
            (None, None) => {}
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n    hint: {hint}")?;
        }
        Ok(())
    }
}

/// Every diagnostic of one load, sorted by file and position.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Diagnostics {
    list: Vec<Diagnostic>,
    /// How many of `list` are errors: asked after every field checked, so kept, not counted.
    #[serde(skip)]
    errors: usize,
}

impl Diagnostics {
    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.errors += usize::from(diagnostic.severity == Severity::Error);
        self.list.push(diagnostic);
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.errors += other.errors;
        self.list.extend(other.list);
    }

    pub fn has_errors(&self) -> bool {
        self.errors > 0
    }

    pub fn error_count(&self) -> usize {
        self.errors
    }

    pub fn warning_count(&self) -> usize {
        self.list.len() - self.errors
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.list.iter()
    }

    /// Rewrites the message and hint of every diagnostic with `f`.
    pub fn rewrite(&mut self, f: impl Fn(&str) -> String) {
        for d in &mut self.list {
            d.message = f(&d.message);
            if let Some(hint) = &d.hint {
                d.hint = Some(f(hint));
            }
        }
    }

    /// Sorts by file, line and column and drops exact repeats.
    pub fn sorted(mut self) -> Self {
        self.list.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
        self.list.dedup();
        self.errors = self.list.iter().filter(|d| d.severity == Severity::Error).count();
        self
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.list {
            writeln!(f, "{d}")?;
        }
        let (errors, warnings) = (self.error_count(), self.warning_count());
        write!(f, "{errors} error{}, {warnings} warning{}", plural(errors), plural(warnings))
    }
}

pub(crate) fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
