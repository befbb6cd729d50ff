//! Loading: file → text → YAML tree → decoded sections → validated configuration, with every
//! problem of the file reported at once.
//!
//! The pipeline, and why each step is separate:
//!
//! 1. **Read** the file ([`read_text`], for `load` but not `load_str`). At most
//!    [`MAX_FILE_SIZE`] bytes, and it must be UTF-8; a bad byte is reported at its line and
//!    column.
//! 2. **Scan** with the YAML parser into a [`SourceMap`] (key path → line, column). A syntax error
//!    stops here as a single error: nothing after it would be trustworthy. Duplicate keys and
//!    extra documents are collected and loading goes on.
//! 3. **Parse** with serde-saphyr into a `serde_json::Value` tree. Options: duplicate keys keep
//!    the first occurrence (the scan reported them), booleans are YAML 1.2 only (`yes`/`no`/`on`
//!    stay strings, so `name: no` is the name "no"), and NaN/infinity become strings so that
//!    `serde_json::Value` cannot turn them into `null`, which would read as "use the default".
//! 4. **Decode** section by section, item by item, key by key ([`super::decode`]).
//! 5. **Validate** semantics and resolve defaults (each section's file). `load` also opens and
//!    parses every file the configuration names ([`super::files`]).
//! 6. **Locate** every issue in the source map and sort by position.
//!
//! Steps 4 and 5 always both run, so a type error in one point and an unknown bus in another
//! device come out of the same run. Steps 2 to 6 are [`load_document`], which simulator files
//! (`crate::simulator::map`) go through too with their own steps 4 and 5.

use std::io::Read;
use std::path::Path;

use serde_saphyr::{DuplicateKeyPolicy, MessageFormatter, NonFiniteFloatPolicy};

use super::error::{ConfigError, ConfigErrors, Issue};
use super::path::{KeyPath, Pos};
use super::source_map::SourceMap;

/// Refuse files above this size: a configuration is a few kilobytes, and a wrong `--config`
/// (a log file, `/dev/zero`) should fail fast instead of filling memory.
pub const MAX_FILE_SIZE: u64 = 16 * 1024 * 1024;

/// Reads the file at `path` as text: at most [`MAX_FILE_SIZE`] bytes of UTF-8, a bad byte
/// reported at its line and column. Errors name the file as given.
pub fn read_text(path: &Path) -> Result<String, ConfigErrors> {
    let file = path.display().to_string();
    let bytes = read_limited(path).map_err(|error| {
        ConfigErrors::whole_file(&file, format!("cannot read the file: {error}"))
    })?;
    String::from_utf8(bytes).map_err(|error| {
        let valid = &error.as_bytes()[..error.utf8_error().valid_up_to()];
        // The prefix is valid UTF-8 by definition; lossy conversion cannot alter it.
        let before = String::from_utf8_lossy(valid);
        let line = before.matches('\n').count() as u64 + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) as u64 + 1;
        ConfigErrors::new(vec![ConfigError {
            file: file.clone(),
            line: Some(line),
            column: Some(column),
            path: String::new(),
            message: "the file is not valid utf-8 text".to_owned(),
        }])
    })
}

fn read_limited(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(std::io::Error::other(format!(
            "it is larger than {} MiB; is it the right file?",
            MAX_FILE_SIZE / (1024 * 1024)
        )));
    }
    Ok(bytes)
}

/// Steps 2 to 6 of the pipeline with `build` as steps 4 and 5: `build` decodes and checks the
/// document tree, pushing every problem to the issues, and returns `None` only with at least one
/// issue pushed. Shared with the other files held to this standard (simulator files, see
/// `crate::simulator::map`), so they get the same positions, ordering and wording.
pub(crate) fn load_document<T>(
    text: &str,
    file_name: &str,
    build: impl FnOnce(&serde_json::Value, &mut Vec<Issue>) -> Option<T>,
) -> Result<T, ConfigErrors> {
    load_document_with_warnings(text, file_name, build).map(|(built, _)| built)
}

/// [`load_document`], with the warnings (issues that do not refuse the file) located.
pub(crate) fn load_document_with_warnings<T>(
    text: &str,
    file_name: &str,
    build: impl FnOnce(&serde_json::Value, &mut Vec<Issue>) -> Option<T>,
) -> Result<(T, Vec<ConfigError>), ConfigErrors> {
    let whole_document = |pos: Option<Pos>, message: String| {
        ConfigErrors::new(vec![ConfigError {
            file: file_name.to_owned(),
            line: pos.map(|pos| pos.line),
            column: pos.map(|pos| pos.column),
            path: String::new(),
            message,
        }])
    };

    let (source_map, mut issues) = SourceMap::scan(text).map_err(|error| {
        whole_document(
            Some(error.pos),
            format!("yaml syntax error: {}", error.message),
        )
    })?;

    let mut options = serde_saphyr::Options::default();
    options.duplicate_keys = DuplicateKeyPolicy::FirstWins;
    options.strict_booleans = true;
    options.non_finite_float_policy = NonFiniteFloatPolicy::AsString;
    let document: serde_json::Value = match serde_saphyr::from_str_with_options(text, options) {
        Ok(document) => document,
        Err(error) => {
            // The scan accepted the text, so this is structure serde-saphyr refuses (a
            // collection as a key, the alias budget, a second document). Nothing can be decoded:
            // report it with what the scan found.
            let error = error.without_snippet();
            let mut errors = resolve(issues, &source_map, file_name).errors;
            // The scan already described a second document, at its `---`.
            let already_reported = matches!(error, serde_saphyr::Error::MultipleDocuments { .. })
                && !errors.is_empty();
            if !already_reported {
                let message = serde_saphyr::DefaultMessageFormatter
                    .format_message(error)
                    .escape_debug()
                    .to_string();
                let pos = error.location().map(|location| Pos {
                    line: location.line(),
                    column: location.column(),
                });
                errors.extend(whole_document(pos, message).errors);
            }
            return Err(ConfigErrors::new(errors));
        }
    };

    let built = build(&document, &mut issues);
    let (errors, warnings): (Vec<Issue>, Vec<Issue>) =
        issues.into_iter().partition(Issue::is_error);
    let warnings = resolve(warnings, &source_map, file_name).errors;
    match built {
        Some(built) if errors.is_empty() => Ok((built, warnings)),
        _ if !errors.is_empty() => {
            Err(resolve(errors, &source_map, file_name).with_warnings(warnings))
        }
        // Unreachable by construction (every `None` comes with an error); still an error, not a
        // panic, and not a half-built config.
        _ => Err(resolve(
            vec![Issue::value(
                KeyPath::root(),
                "internal error: the configuration could not be built; please report this",
            )],
            &source_map,
            file_name,
        )
        .with_warnings(warnings)),
    }
}

/// Turns issues into located, sorted errors.
fn resolve(issues: Vec<Issue>, source_map: &SourceMap, file_name: &str) -> ConfigErrors {
    let errors = issues
        .into_iter()
        .map(|issue| {
            let pos = source_map.locate(&issue.path, &issue.at);
            let note = issue
                .note
                .as_ref()
                .map(|note| source_map.render_note(note))
                .unwrap_or_default();
            ConfigError {
                file: file_name.to_owned(),
                line: pos.map(|p| p.line),
                column: pos.map(|p| p.column),
                path: issue.path.to_string(),
                message: format!("{}{note}", issue.message),
            }
        })
        .collect();
    ConfigErrors::new(errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load, load_str, Config};

    fn lines(result: Result<Config, ConfigErrors>) -> Vec<String> {
        match result {
            Ok(config) => panic!("expected errors, got {config:?}"),
            Err(errors) => errors.errors.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_syntax_error_is_one_error_at_the_parser_position() {
        assert_eq!(
            lines(load_str("gateway:\n  id: [a, b\n  data_dir: x\n", "c.yaml")),
            ["c.yaml:3:11: yaml syntax error: illegal placement of ':' indicator"]
        );
    }

    #[test]
    fn empty_and_non_mapping_documents() {
        assert_eq!(
            lines(load_str("# nothing\n", "c.yaml")),
            ["c.yaml:1:1: the configuration is empty: expected the sections gateway, uplink, buses and devices"]
        );
        assert_eq!(
            lines(load_str("- a\n- b\n", "c.yaml")),
            ["c.yaml:1:1: expected the configuration (a mapping of keys to values), got a list"]
        );
    }

    #[test]
    fn duplicate_keys_are_all_reported_and_loading_goes_on() {
        let text = "gateway:\n  id: a\n  id: b\n  data_dir: /x\n  data_dir: /y\nuplink: 5\n";
        assert_eq!(
            lines(load_str(text, "c.yaml")),
            [
                "c.yaml:1:1: buses: missing required key",
                "c.yaml:1:1: devices: missing required key",
                r#"c.yaml:3:3: gateway.id: duplicate key "id" (first defined at line 2)"#,
                r#"c.yaml:5:3: gateway.data_dir: duplicate key "data_dir" (first defined at line 4)"#,
                "c.yaml:6:9: uplink: expected the uplink section (a mapping of keys to values), got a number",
            ]
        );
    }

    #[test]
    fn structure_serde_saphyr_refuses_is_reported_with_the_scan_issues() {
        assert_eq!(
            lines(load_str("a: 1\na: 2\n[k]: v\n", "c.yaml")),
            [
                r#"c.yaml:2:1: a: duplicate key "a" (first defined at line 1)"#,
                "c.yaml:3:1: expected string scalar",
            ]
        );
    }

    #[test]
    fn a_second_document_is_refused() {
        assert_eq!(
            lines(load_str("a: 1\n---\nb: 2\n", "c.yaml")),
            ["c.yaml:2:1: a second yaml document is not allowed: the configuration is one document"]
        );
    }

    #[test]
    fn reading_problems_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.yaml");
        let errors = lines(load(&missing));
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].starts_with(&format!("{}: cannot read the file: ", missing.display())),
            "{errors:?}"
        );

        let binary = dir.path().join("binary.yaml");
        std::fs::write(&binary, b"gateway:\n  id: a\xff\n").unwrap();
        assert_eq!(
            lines(load(&binary)),
            [format!(
                "{}:2:8: the file is not valid utf-8 text",
                binary.display()
            )]
        );
    }

    /// The cases `tests/config_check.rs` runs through the binary, run here in-process so a
    /// regression shows up in `cargo test --lib` too.
    #[test]
    fn shipped_cases_report_their_expected_lines() {
        let cases = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/config_cases");
        let mut names: Vec<_> = std::fs::read_dir(&cases)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert!(names.len() >= 10, "{names:?}");
        for name in names {
            let relative = format!("tests/config_cases/{name}/config.yaml");
            let config = Path::new(env!("CARGO_MANIFEST_DIR")).join(&relative);
            let output = match load(&config) {
                Ok(_) => panic!("{name}: the config loaded without errors"),
                // Errors name the file as given; show it as the binary test passes it.
                Err(errors) => errors
                    .to_string()
                    .replace(&config.display().to_string(), &relative),
            };
            let expected =
                std::fs::read_to_string(cases.join(&name).join("expected.txt")).unwrap_or_default();
            assert!(
                !expected.trim().is_empty(),
                "{name}: no expected.txt; output:\n{output}"
            );
            for line in expected.lines().filter(|line| !line.trim().is_empty()) {
                assert!(
                    output.lines().any(|out| out == line),
                    "{name}: missing line\n{line}\nin output:\n{output}"
                );
            }
        }
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.yaml");
        let config = load(&path).unwrap_or_else(|errors| panic!("{errors}"));
        assert_eq!(config.gateway.id, "plant1-gw01");
        assert_eq!(config.buses.len(), 1);
        let names: Vec<_> = config
            .devices
            .iter()
            .flat_map(|d| {
                d.points
                    .iter()
                    .map(move |p| format!("{}/{}", d.name, p.name))
            })
            .collect();
        assert_eq!(
            names,
            [
                "boiler/temperature",
                "boiler/pressure",
                "boiler/counter",
                "boiler/pump_running",
                "boiler/flow",
                "boiler/setpoint",
                "chiller/supply_temp",
                "chiller/alarm",
            ]
        );
    }

    const EXAMPLE: &str = include_str!("../../config/example.yaml");

    /// Every error of `text` is on a line that exists; there is at least one error.
    fn assert_well_formed(text: &str, result: Result<Config, ConfigErrors>) {
        if let Err(errors) = result {
            assert!(!errors.errors.is_empty());
            let lines = text.lines().count() as u64 + 1;
            for error in &errors.errors {
                assert!(
                    error.line.is_some_and(|line| (1..=lines).contains(&line)),
                    "{error}"
                );
                assert!(
                    !error.message.is_empty() && !error.message.contains('\n'),
                    "{error}"
                );
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

        #[test]
        fn mangled_examples_give_errors_not_panics(
            start in 0usize..5000,
            len in 0usize..60,
            insert in "[ -~\n\t]{0,12}",
        ) {
            let chars: Vec<char> = EXAMPLE.chars().collect();
            let start = start.min(chars.len());
            let end = (start + len).min(chars.len());
            let text: String = chars[..start]
                .iter()
                .copied()
                .chain(insert.chars())
                .chain(chars[end..].iter().copied())
                .collect();
            assert_well_formed(&text, load_str(&text, "c.yaml"));
        }

        #[test]
        fn examples_missing_a_line_give_errors_not_panics(skip in 0usize..200) {
            let text: String = EXAMPLE
                .lines()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, line)| format!("{line}\n"))
                .collect();
            assert_well_formed(&text, load_str(&text, "c.yaml"));
        }

        #[test]
        fn arbitrary_text_gives_errors_not_panics(text in "\\PC{0,200}") {
            assert_well_formed(&text, load_str(&text, "c.yaml"));
        }
    }

    #[test]
    fn anchors_and_merge_keys_work() {
        let text = "\
gateway: {id: gw, data_dir: /d}
uplink: {url: 'mqtt://b'}
buses: [{name: plc1, type: tcp, host: h}]
defaults: &defaults
  bus: plc1
  poll_interval: 5ms
devices:
  - <<: *defaults
    name: a
    points: [{name: p, table: coil, address: 0, type: bool}]
";
        // `defaults` is not a key of the contract; the merged poll_interval is reported at the
        // merge site, the closest position that exists.
        assert_eq!(
            lines(load_str(text, "c.yaml")),
            [
                r#"c.yaml:4:1: defaults: unknown key "defaults" (expected one of: gateway, uplink, buses, devices, store, metrics, commands, local, console, remote_config)"#,
                "c.yaml:8:5: devices[0].poll_interval: must be at least 10ms, got 5ms",
            ]
        );
    }
}
