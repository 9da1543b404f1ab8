//! The map of the house (docs/architecture.md, "Map of the house") as a
//! check: every import points down or sideways, never back up.
//!
//! Design decision: the check reads the sources as text, so it needs no
//! compiler plug-in and runs with `cargo test`. Comments and string literals
//! are blanked first (a comment that mentions a room is no dependency), then
//! every `crate::…` and `super::…` path is resolved to the room it names (a
//! top-level module of `peer/src`). `super` counts from the file's own module;
//! an inline module's `super::super` is the one case it would resolve one
//! level too high. Crates are checked on their `Cargo.toml` `[dependencies]`
//! (normal and target-specific) and on the crate names their sources use.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Rooms of `peer/src` and the rooms each must never name. Every room but
/// the command line (and the crate root) must also never name `cli`.
const ROOM_RULES: &[(&str, &[&str])] = &[
    ("object_source", &["agent", "swarm"]),
    ("agent", &["swarm"]),
    ("swarm", &["agent"]),
];

/// The top room: it may name every other one, none may name it.
const TOP_ROOM: &str = "cli";

/// The workspace's crates: a source naming one of them depends on it.
const WORKSPACE_CRATES: &[&str] = &[
    "ossc-proto",
    "ossc-wire",
    "ossc-core",
    "ossc-preload",
    "ossc-peer",
    "ossc-cluster-tests",
];

/// Crate folders and what each crate may depend on.
const CRATE_RULES: &[(&str, Allowed)] = &[
    ("proto", Allowed::Workspace(&[])),
    ("wire", Allowed::Only(&[])),
    ("core", Allowed::Workspace(&[])),
    ("preload", Allowed::Only(&["libc", "ossc-wire"])),
    (
        "peer",
        Allowed::Workspace(&["ossc-core", "ossc-proto", "ossc-wire"]),
    ),
];

#[derive(Debug, Clone, Copy)]
enum Allowed {
    /// Any crate from a registry, and these workspace crates.
    Workspace(&'static [&'static str]),
    /// These crates and nothing else.
    Only(&'static [&'static str]),
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("peer/ has a parent")
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// `src`-relative path of a file to its module path: `agent/mod.rs` is
/// `["agent"]`, `agent/cache.rs` is `["agent", "cache"]`, `lib.rs` is `[]`.
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    let file = parts.pop().unwrap_or_default();
    let stem = file.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" && stem != "main" {
        parts.push(stem.to_string());
    }
    parts
}

/// `src` with comments and string and char literals replaced by spaces
/// (line breaks kept), so only code is left to read.
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to.min(b.len())] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let mut i = 0;
    while i < b.len() {
        let rest = &b[i..];
        if rest.starts_with(b"//") {
            let end = rest
                .iter()
                .position(|&c| c == b'\n')
                .map_or(b.len(), |p| i + p);
            blank(&mut out, i, end);
            i = end;
        } else if rest.starts_with(b"/*") {
            let (mut depth, mut j) = (1, i + 2);
            while j < b.len() && depth > 0 {
                if b[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if b[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                } else {
                    j += 1;
                }
            }
            blank(&mut out, i, j);
            i = j;
        } else if let Some(end) = raw_string_end(b, i) {
            blank(&mut out, i, end);
            i = end;
        } else if b[i] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            blank(&mut out, i, j + 1);
            i = j + 1;
        } else if b[i] == b'\'' {
            // A char literal ('x', '\n', '\u{1F600}'), else a lifetime.
            let end = if rest.get(1) == Some(&b'\\') {
                rest.iter()
                    .skip(3)
                    .position(|&c| c == b'\'')
                    .map(|p| i + p + 4)
            } else {
                let len = src[i + 1..].chars().next().map_or(1, char::len_utf8);
                (rest.get(1 + len) == Some(&b'\'')).then_some(i + len + 2)
            };
            match end {
                Some(end) => {
                    blank(&mut out, i, end);
                    i = end;
                }
                None => i += 1,
            }
        } else {
            i += 1;
        }
    }
    String::from_utf8(out).expect("only ASCII bytes were replaced")
}

/// Where a raw string literal (`r"…"`, `br#"…"#`) starting at `i` ends.
fn raw_string_end(b: &[u8], i: usize) -> Option<usize> {
    if i > 0 && is_ident_byte(b[i - 1]) {
        return None;
    }
    let mut j = i;
    if b.get(j) == Some(&b'b') {
        j += 1;
    }
    if b.get(j) != Some(&b'r') {
        return None;
    }
    j += 1;
    let hashes = b[j..].iter().take_while(|&&c| c == b'#').count();
    j += hashes;
    if b.get(j) != Some(&b'"') {
        return None;
    }
    let close: Vec<u8> = std::iter::once(b'"')
        .chain(std::iter::repeat_n(b'#', hashes))
        .collect();
    let body = j + 1;
    b[body..]
        .windows(close.len())
        .position(|w| w == close.as_slice())
        .map(|p| body + p + close.len())
}

fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Reads an identifier at `i` (after whitespace); `(ident, end)`.
fn ident_at(code: &str, i: usize) -> Option<(&str, usize)> {
    let start = i + code[i..].len() - code[i..].trim_start().len();
    let len = code[start..]
        .bytes()
        .take_while(|&c| is_ident_byte(c))
        .count();
    (len > 0).then(|| (&code[start..start + len], start + len))
}

/// The position after `::` at `i` (whitespace allowed around it).
fn after_path_sep(code: &str, i: usize) -> Option<usize> {
    let trimmed = code[i..].trim_start();
    trimmed
        .strip_prefix("::")
        .map(|rest| code.len() - rest.len())
}

/// The first segments of the items of the `{ … }` group opening at `open`:
/// `crate::{a::X, b}` names `a` and `b`.
fn group_heads(code: &str, open: usize) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut expect_head = false;
    for (k, c) in code[open..].char_indices() {
        match c {
            '{' => {
                depth += 1;
                expect_head = depth == 1;
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => expect_head = true,
            c if c.is_whitespace() => {}
            _ if expect_head => {
                if let Some((word, _)) = ident_at(code, open + k) {
                    heads.push(word.to_string());
                }
                expect_head = false;
            }
            _ => {}
        }
    }
    heads
}

/// The crate-root modules (rooms) that `src`, the file of module `module`,
/// names through `crate::` or `super::` paths in its code.
fn named_rooms(src: &str, module: &[String]) -> BTreeSet<String> {
    let code = code_only(src);
    let b = code.as_bytes();
    let mut rooms = BTreeSet::new();
    let mut i = 0;
    while i < b.len() {
        if !is_ident_byte(b[i]) || (i > 0 && is_ident_byte(b[i - 1])) {
            i += 1;
            continue;
        }
        let Some((word, mut end)) = ident_at(&code, i) else {
            i += 1;
            continue;
        };
        let mut depth = match word {
            "crate" => Some(0),
            "super" => Some(module.len().saturating_sub(1)),
            _ => None,
        };
        if let Some(d) = depth.as_mut() {
            // Further `super`s climb; the path is a room's once it is at the root.
            while let Some(next) = after_path_sep(&code, end) {
                match ident_at(&code, next) {
                    Some(("super", e)) => {
                        *d = d.saturating_sub(1);
                        end = e;
                    }
                    Some((name, e)) => {
                        if *d == 0 {
                            rooms.insert(name.to_string());
                        }
                        end = e;
                        break;
                    }
                    None => {
                        let brace = next + code[next..].len() - code[next..].trim_start().len();
                        if *d == 0 && code[brace..].starts_with('{') {
                            rooms.extend(group_heads(&code, brace));
                        }
                        break;
                    }
                }
            }
        }
        i = end;
    }
    rooms
}

/// Back-edges of one `peer/src` file: rooms it names that it must not.
fn back_edges(rel: &Path, src: &str) -> Vec<String> {
    let module = module_path(rel);
    let Some(room) = module.first().map(String::as_str) else {
        return Vec::new(); // the crate root declares every room
    };
    if room == TOP_ROOM || room == "bin" {
        return Vec::new();
    }
    let mut forbidden: Vec<&str> = vec![TOP_ROOM];
    for (r, names) in ROOM_RULES {
        if *r == room {
            forbidden.extend(names.iter());
        }
    }
    named_rooms(src, &module)
        .into_iter()
        .filter(|named| named != room && forbidden.contains(&named.as_str()))
        .map(|named| format!("peer/src/{} names crate::{named}", rel.display()))
        .collect()
}

/// The crates in a `Cargo.toml`'s `[dependencies]` and
/// `[target.….dependencies]` sections.
fn dependencies(manifest: &str) -> BTreeSet<String> {
    let mut deps = BTreeSet::new();
    let mut in_deps = false;
    for line in manifest.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(section) = line.strip_prefix('[') {
            let section = section.trim_end_matches(']').trim();
            in_deps = section == "dependencies"
                || (section.starts_with("target.") && section.ends_with(".dependencies"));
            continue;
        }
        if in_deps && !line.is_empty() {
            let key = line.split(['=', '.']).next().unwrap_or("").trim();
            if !key.is_empty() {
                deps.insert(key.trim_matches('"').to_string());
            }
        }
    }
    deps
}

/// Dependencies that break a crate's rule.
fn forbidden_dependencies(deps: &BTreeSet<String>, allowed: Allowed) -> Vec<String> {
    deps.iter()
        .filter(|d| match allowed {
            Allowed::Workspace(ok) => d.starts_with("ossc-") && !ok.contains(&d.as_str()),
            Allowed::Only(ok) => !ok.contains(&d.as_str()),
        })
        .cloned()
        .collect()
}

/// The workspace crates (as `ossc_…` identifiers) that `src` names in code.
fn named_crates(src: &str) -> BTreeSet<String> {
    let code = code_only(src);
    let b = code.as_bytes();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while let Some(p) = code[i..].find("ossc_") {
        let start = i + p;
        let len = b[start..].iter().take_while(|&&c| is_ident_byte(c)).count();
        if start == 0 || !is_ident_byte(b[start - 1]) {
            names.insert(code[start..start + len].to_string());
        }
        i = start + len;
    }
    names
}

#[test]
fn no_room_of_peer_names_a_room_above_or_beside_it() {
    let src = workspace_root().join("peer/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 20, "found only {} files", files.len());
    let mut edges = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let text = std::fs::read_to_string(file).unwrap();
        edges.extend(back_edges(rel, &text));
    }
    assert!(
        edges.is_empty(),
        "back-edges (docs/architecture.md, Map of the house):\n{}",
        edges.join("\n")
    );
}

#[test]
fn every_crate_depends_only_on_what_the_map_allows() {
    let root = workspace_root();
    let mut broken = Vec::new();
    let mut checked = 0;
    for (dir, allowed) in CRATE_RULES {
        let manifest = root.join(dir).join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue; // a crate the workspace does not have (yet)
        };
        checked += 1;
        for dep in forbidden_dependencies(&dependencies(&text), *allowed) {
            broken.push(format!("{dir}/Cargo.toml depends on {dep}"));
        }
        // The workspace crates its sources name must be ones it may depend on.
        let own = format!("ossc-{dir}");
        let mut files = Vec::new();
        rust_files(&root.join(dir).join("src"), &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            let named: BTreeSet<String> = named_crates(&text)
                .into_iter()
                .map(|name| name.replace('_', "-"))
                .filter(|dep| *dep != own && WORKSPACE_CRATES.contains(&dep.as_str()))
                .collect();
            for dep in forbidden_dependencies(&named, *allowed) {
                let rel = file.strip_prefix(&root).unwrap();
                broken.push(format!("{} names {}", rel.display(), dep.replace('-', "_")));
            }
        }
    }
    assert!(checked >= 4, "found only {checked} crates");
    assert!(
        broken.is_empty(),
        "dependencies against docs/architecture.md, Map of the house:\n{}",
        broken.join("\n")
    );
}

fn rooms(src: &str, module: &[&str]) -> Vec<String> {
    let module: Vec<String> = module.iter().map(|s| s.to_string()).collect();
    named_rooms(src, &module).into_iter().collect()
}

#[test]
fn the_scanner_finds_every_form_of_path() {
    assert_eq!(rooms("use crate::swarm::Swarm;", &["agent"]), ["swarm"]);
    assert_eq!(
        rooms("let s = crate :: swarm :: Swarm::start();", &["agent"]),
        ["swarm"]
    );
    assert_eq!(
        rooms(
            "use crate::{object_source::{ChunkTarget, VecTarget},\n    swarm::Swarm, cli};",
            &["agent", "cache"]
        ),
        ["cli", "object_source", "swarm"]
    );
    // `super` climbs from the file's module; only the root's children are rooms.
    assert_eq!(rooms("use super::swarm::Swarm;", &["agent"]), ["swarm"]);
    assert_eq!(
        rooms("use super::super::cli::x;", &["agent", "cache"]),
        ["cli"]
    );
    assert!(rooms("use super::keys;", &["agent", "cache"]).is_empty());
    assert!(rooms("use super::*;", &["agent"]).is_empty());
}

#[test]
fn the_scanner_ignores_comments_strings_and_other_crates() {
    let src = r##"
        //! The peer layer (`crate::swarm`) is named in a comment only.
        /* crate::swarm /* nested crate::cli */ */
        fn f<'a>(x: &'a str) -> char {
            let _ = "crate::swarm";
            let _ = r#"crate::cli "quoted""#;
            let _ = b'"';
            let _ = '\'';
            let _ = ossc_peer_like::crate_swarm;
            'c'
        }
        use crate::object_source::Memfd;
    "##;
    assert_eq!(rooms(src, &["agent"]), ["object_source"]);
}

#[test]
fn a_planted_back_edge_is_caught() {
    let agent = Path::new("agent/cache.rs");
    let planted = "use crate::object_source::Memfd;\nuse crate::swarm::SwarmFetcher;\n";
    assert_eq!(
        back_edges(agent, planted),
        ["peer/src/agent/cache.rs names crate::swarm"]
    );
    assert!(back_edges(agent, "use crate::object_source::Memfd;").is_empty());
    assert_eq!(
        back_edges(Path::new("swarm/mod.rs"), "use super::agent::Agent;"),
        ["peer/src/swarm/mod.rs names crate::agent"]
    );
    assert_eq!(
        back_edges(
            Path::new("object_source/verify.rs"),
            "fn f() { crate::cli::node::init_logging(); }"
        ),
        ["peer/src/object_source/verify.rs names crate::cli"]
    );
    assert_eq!(
        back_edges(Path::new("prometheus.rs"), "use crate::cli::cli_support;"),
        ["peer/src/prometheus.rs names crate::cli"]
    );
    // The top room and the binary may name anything.
    assert!(back_edges(Path::new("cli/node.rs"), "use crate::swarm::Swarm;").is_empty());
    assert!(back_edges(Path::new("bin/ossc.rs"), "use crate::cli::x;").is_empty());
}

#[test]
fn a_planted_dependency_is_caught() {
    let preload = "[package]\nname = \"ossc-preload\"\n\n[dependencies]\nlibc.workspace = true\nossc-wire.workspace = true\nserde = { version = \"1\" }\n\n[dev-dependencies]\ntempfile.workspace = true\n";
    let deps = dependencies(preload);
    assert_eq!(
        deps,
        BTreeSet::from(["libc".into(), "ossc-wire".into(), "serde".into()])
    );
    assert_eq!(
        forbidden_dependencies(&deps, Allowed::Only(&["libc", "ossc-wire"])),
        ["serde"]
    );
    let core = "[dependencies]\ntokio.workspace = true\n\n[target.'cfg(unix)'.dependencies]\nossc-peer = { path = \"../peer\" }\n";
    assert_eq!(
        forbidden_dependencies(&dependencies(core), Allowed::Workspace(&[])),
        ["ossc-peer"]
    );
    assert_eq!(
        named_crates("// ossc_peer in a comment\nuse ossc_peer::agent;\nlet x = my_ossc_core;"),
        BTreeSet::from(["ossc_peer".to_string()])
    );
}
