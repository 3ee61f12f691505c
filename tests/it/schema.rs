//! The committed JSON Schema matches the types, and every example file points editors at it.

use crate::support::root;

#[test]
fn the_committed_schema_matches_the_types() {
    let generated = lifeboat::schema::render();
    let path = root().join(lifeboat::schema::SCHEMA_PATH);
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated
        && std::env::var_os("LIFEBOAT_UPDATE_SCHEMA").is_some()
        && std::env::var_os("CI").is_none()
    {
        std::fs::write(&path, &generated).unwrap();
        panic!("{} was out of date and has been rewritten: review and commit it", lifeboat::schema::SCHEMA_PATH);
    }
    assert!(
        committed == generated,
        "{} is out of date: run `cargo run -q -- schema > {}` and commit it",
        lifeboat::schema::SCHEMA_PATH,
        lifeboat::schema::SCHEMA_PATH
    );
}

#[test]
fn the_schema_command_prints_the_schema() {
    let run = crate::support::lifeboat(&["schema"]);
    assert_eq!(run.code, 0);
    assert_eq!(run.stdout, lifeboat::schema::render());
}

#[test]
fn every_example_file_names_the_schema_by_a_path_that_exists() {
    let mut checked = 0;
    let mut stack = vec![root().join("example-repo")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                let text = std::fs::read_to_string(&path).unwrap();
                let first = text.lines().next().unwrap_or_default();
                let relative = first.strip_prefix("# yaml-language-server: $schema=").unwrap_or_else(|| {
                    panic!("{} does not start with the yaml-language-server comment", path.display())
                });
                let schema = path.parent().unwrap().join(relative);
                assert!(schema.is_file(), "{} points at {}, which does not exist", path.display(), schema.display());
                assert_eq!(
                    schema.canonicalize().unwrap(),
                    root().join(lifeboat::schema::SCHEMA_PATH).canonicalize().unwrap()
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 4, "only {checked} example files found");
}
