//! The shape of the code, checked: the library never reaches up into the command line, and no
//! function that does I/O takes a flag that switches writing on or off (a pass is planned, then
//! applied: the plan is the dry run).

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn library_files() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    files
        .into_iter()
        .map(|p| (p.strip_prefix(&root).unwrap().display().to_string(), std::fs::read_to_string(&p).unwrap()))
        .collect()
}

/// The files allowed to know the command line: the binary, the argument types, the commands,
/// and unit tests (which check, for one, that exit codes agree with the status).
fn knows_the_command_line(path: &str) -> bool {
    path == "main.rs"
        || path == "cli.rs"
        || path.starts_with("commands/")
        || path.ends_with("/tests.rs")
        || path.ends_with("_tests.rs")
}

#[test]
fn no_library_module_imports_the_command_line() {
    let mut found = Vec::new();
    for (path, text) in library_files() {
        if knows_the_command_line(&path) {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            if line.contains("crate::commands") || line.contains("crate::cli") {
                found.push(format!("src/{path}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "library modules that reach into the command line:\n{}", found.join("\n"));
}

#[test]
fn no_function_takes_a_flag_that_switches_writes_on() {
    let flag = regex::Regex::new(r"\b(apply|dry_run|dryrun|write|commit|publish|mutate|execute)\s*:\s*bool\b").unwrap();
    let mut found = Vec::new();
    for (path, text) in library_files() {
        // Command-line arguments may be flags; they become a choice of function in `commands`.
        if path == "cli.rs" {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            if flag.is_match(line) {
                found.push(format!("src/{path}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "flags that switch writing on:\n{}", found.join("\n"));
}
