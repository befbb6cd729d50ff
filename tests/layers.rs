//! Imports follow the data: every top-level module of `src/` has a layer, and a module imports
//! only from layers below its own. So there is no import circle, and no stage imports one that
//! stands after it (the queue never names the uplink, the pollers never name the queue).
//!
//! The order is written down here, once, and explained in `docs/ARCHITECTURE.md` ("Layers").
//! The check reads every `.rs` file under `src/` as text and collects the paths it names:
//! `crate::x…` (in `use` lines and in expressions, `crate::{x, y}` groups included) and, in
//! `main.rs`, `fieldrelay::x…`. Comments, string literals and test-only code (`#[cfg(test)]`
//! items and the files of `#[cfg(test)] mod x;`) are left out: a test may drive a part with a
//! higher one (a unit test of a bus owner talks to the simulator, a queue test plays the uplink's
//! session).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, bottom first. A module may import modules of lower layers only; modules of one
/// layer are independent of each other.
const LAYERS: &[(&str, &[&str])] = &[
    // What every stage reads: the configuration, and leaf utilities that import nothing of the
    // crate (reconnect backoff, the terminal progress bar, plain-text tables).
    ("foundation", &["config", "backoff", "progress", "table"]),
    // The HTTP server under our own limits, for the metrics endpoint and the console.
    ("http", &["http"]),
    // The unit of data and the sink it is pushed into: the vocabulary shared by the stages, so
    // that a producer never names its consumer.
    ("vocabulary", &["sample"]),
    // The pipeline, in the order the data flows: modbus → (sample) → queue → uplink.
    ("modbus", &["modbus"]),
    ("bus units", &["fleet"]),
    ("queue", &["queue"]),
    // Beside the pipeline: what the status publisher says goes through the queue, and the uplink
    // publishes its certificates; Sparkplug is pure encoding of samples and rows.
    ("beside the queue", &["status", "sparkplug"]),
    ("uplink", &["uplink"]),
    // Beside the pipeline: commands come in through a connection (the uplink's or the on-site
    // broker's), the local client reuses the uplink's connection parts.
    ("commands", &["commands"]),
    // The web console reads the queue, the uplink's state and the devices' health, beside the
    // on-site broker's client.
    ("local", &["local", "console"]),
    // Operations and tools around the running gateway.
    (
        "tools",
        &["service", "probe", "import", "simulator", "cli", "budget"],
    ),
    ("reload", &["reload"]),
    // A pushed configuration: taken from the uplink, applied through the reload task.
    ("remote config", &["remote_config"]),
    ("metrics", &["metrics"]),
    // The wiring, and the binary.
    ("app", &["app"]),
    ("main", &["main"]),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&module))
}

/// Source text without comments and with string and character literals emptied, so that only
/// code is searched.
fn code_only(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            let end = rest.find('\n').map_or(text.len(), |n| i + n);
            i = end;
        } else if rest.starts_with("/*") {
            let end = rest.find("*/").map_or(text.len(), |n| i + n + 2);
            i = end;
        } else if let Some(len) = raw_string_len(rest) {
            out.push_str("\"\"");
            i += len;
        } else if rest.starts_with('"') {
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] != b'"' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            out.push_str("\"\"");
            i = j + 1;
        } else if let Some(len) = char_literal_len(rest) {
            out.push_str("' '");
            i += len;
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// Length of a raw string literal (`r"…"`, `r#"…"#`, `br"…"`) at the start of `rest`.
fn raw_string_len(rest: &str) -> Option<usize> {
    let after_b = rest.strip_prefix('b').unwrap_or(rest);
    let after_r = after_b.strip_prefix('r')?;
    let hashes = after_r.len() - after_r.trim_start_matches('#').len();
    let body = after_r[hashes..].strip_prefix('"')?;
    let close = format!("\"{}", "#".repeat(hashes));
    let end = body.find(&close)?;
    Some(rest.len() - body.len() + end + close.len())
}

/// Length of a character literal (`'a'`, `'\n'`, `'{'`) at the start of `rest`; `None` for a
/// lifetime.
fn char_literal_len(rest: &str) -> Option<usize> {
    let mut chars = rest.char_indices().skip(1);
    let (_, first) = chars.next()?;
    if first == '\\' {
        let close = rest.get(3..)?.find('\'')?;
        return Some(close + 4);
    }
    let (at, next) = chars.next()?;
    (next == '\'').then_some(at + 1)
}

/// `code` without its `#[cfg(test)]` items; the names of the `#[cfg(test)] mod x;` files.
fn without_tests(code: &str) -> (String, Vec<String>) {
    const MARK: &str = "#[cfg(test)]";
    let mut out = String::new();
    let mut test_files = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(MARK) {
        out.push_str(&rest[..at]);
        let item = &rest[at + MARK.len()..];
        let end = item_len(item);
        let words: Vec<&str> = item[..end].split_whitespace().collect();
        if let Some(name) = out_of_line_module(&words) {
            test_files.push(name);
        }
        rest = &item[end..];
    }
    out.push_str(rest);
    (out, test_files)
}

/// The name of `mod name;` (with any visibility) in the words of an item.
fn out_of_line_module(words: &[&str]) -> Option<String> {
    let at = words.iter().position(|w| *w == "mod")?;
    let name = words.get(at + 1)?.strip_suffix(';')?;
    Some(name.to_owned())
}

/// Length of the item at the start of `text`: up to its `;` or the end of its first block.
fn item_len(text: &str) -> usize {
    let mut depth = 0usize;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i + 1;
                }
            }
            ';' if depth == 0 => return i + 1,
            _ => {}
        }
    }
    text.len()
}

/// The top-level modules named after `prefix` (`crate::x`, `crate::{x, y::z}`).
fn named_modules(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            found.extend(group_heads(group));
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                found.insert(name.to_owned());
            }
        }
    }
    found
}

/// The first name of every entry of a `{a, b::c, d::{e, f}}` group (after its `{`).
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0usize;
    let mut entry_start = true;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => entry_start = true,
            c if c.is_whitespace() => {}
            _ if entry_start => {
                entry_start = false;
                let name = ident(&group[i..]);
                if !name.is_empty() && name != "self" {
                    heads.push(name.to_owned());
                }
            }
            _ => {}
        }
    }
    heads
}

fn ident(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file under `src/` belongs to (`queue` for `src/queue/store/mod.rs`,
/// `main` for `src/main.rs`), `None` for `lib.rs`.
fn module_of(relative: &Path) -> Option<String> {
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib").then(|| name.to_owned())
}

/// Imports between top-level modules: (from, to) → the files that make them. `files` are
/// (path relative to `src/`, text).
fn imports(files: &[(PathBuf, String)]) -> BTreeMap<(String, String), BTreeSet<String>> {
    // Files that only tests compile: `#[cfg(test)] mod x;` in `dir/m.rs` or `dir/mod.rs`.
    let mut test_only: BTreeSet<PathBuf> = BTreeSet::new();
    let mut cleaned = Vec::new();
    for (path, text) in files {
        let (code, test_modules) = without_tests(&code_only(text));
        let dir = match path.file_name().and_then(|n| n.to_str()) {
            Some("mod.rs" | "lib.rs" | "main.rs") => path.parent().map(Path::to_path_buf),
            _ => Some(path.with_extension("")),
        }
        .unwrap_or_default();
        for name in test_modules {
            test_only.insert(dir.join(format!("{name}.rs")));
            test_only.insert(dir.join(&name).join("mod.rs"));
            test_only.insert(dir.join(&name));
        }
        cleaned.push((path.clone(), code));
    }
    let mut edges: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for (path, code) in cleaned {
        if path.ancestors().any(|a| test_only.contains(a)) {
            continue;
        }
        let Some(from) = module_of(&path) else {
            continue;
        };
        let mut named = named_modules(&code, "crate::");
        if from == "main" {
            named.extend(named_modules(&code, "fieldrelay::"));
        }
        for to in named {
            if to != from {
                edges
                    .entry((from.clone(), to))
                    .or_default()
                    .insert(path.display().to_string());
            }
        }
    }
    edges
}

/// Every import that breaks the layering, as a sentence.
fn violations(
    modules: &BTreeSet<String>,
    edges: &BTreeMap<(String, String), BTreeSet<String>>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for module in modules {
        if layer_of(module).is_none() {
            problems.push(format!(
                "src/{module} has no layer: add it to LAYERS in tests/layers.rs (and to the \
                 layers in docs/ARCHITECTURE.md)"
            ));
        }
    }
    for ((from, to), files) in edges {
        let (Some(low), Some(high)) = (layer_of(to), layer_of(from)) else {
            continue;
        };
        if low >= high {
            problems.push(format!(
                "{from} (layer {:?}) imports {to} (layer {:?}), which is not below it: {}",
                LAYERS[high].0,
                LAYERS[low].0,
                files.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    problems
}

/// A circle among the modules, if there is one (depth-first search).
fn circle(edges: &BTreeMap<(String, String), BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<&str, Vec<&str>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut found = path[at..].to_vec();
            found.push(node.to_owned());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut graph: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, to) in edges.keys() {
        graph.entry(from).or_default().push(to);
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, &graph, &mut Vec::new(), &mut done))
}

fn read_src() -> Vec<(PathBuf, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            let relative = path.strip_prefix(&src).expect("under src").to_path_buf();
            (relative, text)
        })
        .collect()
}

#[test]
fn imports_go_only_to_lower_layers_and_make_no_circle() {
    let files = read_src();
    let modules: BTreeSet<String> = files.iter().filter_map(|(p, _)| module_of(p)).collect();
    assert!(
        modules.contains("queue") && modules.contains("uplink") && modules.contains("main"),
        "src/ was not read: {modules:?}"
    );
    let edges = imports(&files);
    assert!(
        edges.contains_key(&("uplink".to_owned(), "queue".to_owned())),
        "the uplink's imports of the queue were not found: the parser is broken"
    );
    let problems = violations(&modules, &edges);
    assert!(
        problems.is_empty(),
        "imports against the layers:\n{}",
        problems.join("\n")
    );
    assert_eq!(circle(&edges), None, "an import circle");
    for (name, layer) in LAYERS {
        for module in *layer {
            assert!(
                modules.contains(*module),
                "LAYERS ({name}) names {module}, which is not a module of src/"
            );
        }
    }
}

/// The check itself: the imports it must refuse are refused, what tests and comments name is
/// not counted.
#[test]
fn a_queue_file_that_names_the_uplink_is_refused() {
    let file = |path: &str, text: &str| (PathBuf::from(path), text.to_owned());
    let files = vec![
        file("uplink/link.rs", "use crate::queue::Queue;\n"),
        file(
            "queue/record.rs",
            "//! See crate::uplink.\nuse crate::{config::Qos, sample};\nfn f() -> &'static str \
             { \"crate::uplink\" }\n#[cfg(test)]\nmod tests {\n    use crate::uplink::session;\n}\n",
        ),
        file("queue/mod.rs", "#[cfg(test)]\nmod tests;\n"),
        file("queue/tests.rs", "use crate::uplink::session::Session;\n"),
    ];
    let modules: BTreeSet<String> = ["queue", "uplink", "config", "sample"]
        .map(String::from)
        .into();
    let edges = imports(&files);
    assert_eq!(violations(&modules, &edges), Vec::<String>::new());
    assert_eq!(circle(&edges), None);

    let mut bad = files.clone();
    bad.push(file(
        "queue/wire.rs",
        "use bytes::Bytes;\nuse crate::uplink::stall;\n",
    ));
    let edges = imports(&bad);
    let problems = violations(&modules, &edges);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("queue/wire.rs"), "{problems:?}");
    assert_eq!(
        circle(&edges),
        Some(vec!["queue".into(), "uplink".into(), "queue".into()])
    );

    let grouped = vec![file(
        "queue/mod.rs",
        "use crate::{config, uplink::{a, b}};\n",
    )];
    assert_eq!(violations(&modules, &imports(&grouped)).len(), 1);
}
