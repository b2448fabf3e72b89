//! The gateway's modules are layers: no module imports another that imports
//! it back, directly or through others.
//!
//! The rule, checked on the source text of `gateway/src` (`main.rs` aside:
//! it is its own crate):
//!
//! - A node is a top-level module (`auth`, `http`, ...) or one of its direct
//!   submodules (`http::routes`, `backends::local`); a deeper module, inline
//!   ones (`mod tests { .. }`) included, belongs to the node of its
//!   ancestor at depth two. `lib.rs` is the node `crate`.
//! - A file depends on each node that a path in it names: `crate::a::b::..`,
//!   `super::..`, `self::..`, or `x::..` where `x` is a module the file
//!   declares, in `use` lists and in code alike, test code included. A path
//!   names the deepest node that is a prefix of it (`crate::http::ApiError`
//!   names `http`, the module's own file). Declaring a module (`mod x;`) is
//!   not a dependency; comments and string literals are skipped.
//! - Two graphs must be acyclic: the one between submodules, and the one
//!   between top-level modules (every edge of the first lifted to the
//!   top-level modules of its ends, edges within a module dropped).
//!
//! So a module's own file (`http/mod.rs`) may re-export its children, but
//! then no child may import from it: children import their siblings by
//! their paths (`super::errors::ApiError`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A dependency of one node on another, with where it was seen.
type Edges = BTreeMap<(String, String), String>;

#[test]
fn the_gateway_modules_have_no_import_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = read_tree(&src);
    let (modules, edges) = module_graph(&files);
    // A scanner that found nothing would pass any tree.
    assert!(modules.len() > 20, "only {} modules found under {}", modules.len(), src.display());
    assert!(edges.len() > 30, "only {} dependencies found", edges.len());
    let problems = cycles(&edges);
    assert!(problems.is_empty(), "import cycles in gateway/src:\n{}", problems.join("\n"));
}

#[test]
fn a_cycle_through_super_a_group_and_a_child_is_found() {
    let files = vec![
        (vec![], "pub mod http;\npub mod auth;\n".to_owned()),
        (vec!["http".into()], "pub mod errors;\npub mod routes;\n".to_owned()),
        (
            vec!["http".into(), "errors".into()],
            "// crate::auth in a comment\nlet s = \"crate::auth\";\nuse crate::{x, auth::{self, Y}};"
                .to_owned(),
        ),
        (vec!["http".into(), "routes".into()], "fn f() { super::errors::g(); }".to_owned()),
        (
            vec!["auth".into()],
            "use crate::http::routes::H;\nmod inner { use super::super::http::routes::H; }".to_owned(),
        ),
    ];
    let (_, edges) = module_graph(&files);
    assert!(edges.contains_key(&("http::errors".into(), "auth".into())), "{edges:?}");
    assert!(edges.contains_key(&("http::routes".into(), "http::errors".into())), "{edges:?}");
    assert!(edges.contains_key(&("auth".into(), "http::routes".into())), "{edges:?}");
    assert!(edges.contains_key(&("auth::inner".into(), "http::routes".into())), "{edges:?}");
    let problems = cycles(&edges);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("auth -> http::routes -> http::errors -> auth"), "{problems:?}");
    assert!(problems[1].contains("auth -> http -> auth"), "{problems:?}");
}

#[test]
fn comments_strings_and_lifetimes_are_not_paths() {
    let tokens =
        tokens("fn f<'a>(x: &'a str) -> char { /* crate::a */ let _ = r#\"super::b\"#; '\\'' }");
    assert!(!tokens.iter().any(|t| t == "crate" || t == "super"), "{tokens:?}");
}

/// Every `.rs` file under `src` but `main.rs`, with its module path.
fn read_tree(src: &Path) -> Vec<(Vec<String>, String)> {
    let mut files = Vec::new();
    let mut pending = vec![src.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") && path != src.join("main.rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                files.push((module_path(src, &path), text));
            }
        }
    }
    files.sort();
    files
}

/// `lib.rs` → `[]`, `a.rs` and `a/mod.rs` → `[a]`, `a/b.rs` → `[a, b]`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let relative: PathBuf = file.strip_prefix(src).unwrap().with_extension("");
    let mut path: Vec<String> =
        relative.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    if matches!(path.last().map(String::as_str), Some("mod" | "lib")) {
        path.pop();
    }
    path
}

/// The node a module belongs to: its path cut to two segments.
fn node_of(path: &[String]) -> String {
    if path.is_empty() { "crate".to_owned() } else { path[..path.len().min(2)].join("::") }
}

/// The modules (from files and inline `mod x {`) and the edges between nodes.
fn module_graph(files: &[(Vec<String>, String)]) -> (BTreeSet<Vec<String>>, Edges) {
    let scanned: Vec<(Vec<String>, Vec<Token>)> =
        files.iter().map(|(path, text)| (path.clone(), located_tokens(text))).collect();
    let mut modules: BTreeSet<Vec<String>> = files.iter().map(|(path, _)| path.clone()).collect();
    for (path, tokens) in &scanned {
        for found in walk(path, tokens).declared {
            modules.insert(found);
        }
    }
    let mut edges = Edges::new();
    for (path, tokens) in &scanned {
        for (from, target, line) in walk(path, tokens).paths {
            // The deepest known module the path starts with.
            let module = (0..=target.len())
                .rev()
                .map(|n| &target[..n])
                .find(|prefix| prefix.is_empty() || modules.contains(*prefix))
                .unwrap();
            let (from, to) = (node_of(&from), node_of(module));
            if from != to {
                let seen = format!(
                    "{}.rs:{line}",
                    if path.is_empty() { "lib".to_owned() } else { path.join("/") }
                );
                edges.entry((from, to)).or_insert(seen);
            }
        }
    }
    (modules, edges)
}

#[derive(Default)]
struct Walk {
    /// Inline modules (`mod x { .. }`), by their full path.
    declared: Vec<Vec<String>>,
    /// (the module the path is in, the absolute path it names, its line).
    paths: Vec<(Vec<String>, Vec<String>, usize)>,
}

/// The paths a file names, resolved to absolute ones, and its inline modules.
fn walk(file: &[String], tokens: &[Token]) -> Walk {
    let mut walk = Walk::default();
    // The inline modules we are in, with the brace depth each opened at.
    let mut inline: Vec<(String, usize)> = Vec::new();
    // Modules declared in the current module, by its depth of inline nesting.
    let mut children: Vec<BTreeSet<String>> = vec![BTreeSet::new()];
    let declared_here: BTreeSet<String> = tokens
        .windows(3)
        .filter(|w| w[0].text == "mod" && is_ident(&w[1].text) && w[2].text == ";")
        .map(|w| w[1].text.clone())
        .collect();
    children[0].extend(declared_here);
    let mut depth = 0usize;
    let mut i = 0;
    while i < tokens.len() {
        let token = &tokens[i].text;
        let here: Vec<String> =
            file.iter().cloned().chain(inline.iter().map(|(m, _)| m.clone())).collect();
        let follows_path = i > 0 && tokens[i - 1].text == "::";
        match token.as_str() {
            "{" => depth += 1,
            "}" => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                    children.pop();
                }
            }
            "mod" if tokens.get(i + 2).is_some_and(|t| t.text == "{") => {
                let name = tokens[i + 1].text.clone();
                walk.declared.push(here.iter().cloned().chain([name.clone()]).collect());
                inline.push((name, depth));
                children.push(BTreeSet::new());
                depth += 1;
                i += 3;
                continue;
            }
            _ if !follows_path
                && tokens.get(i + 1).is_some_and(|t| t.text == "::")
                && (matches!(token.as_str(), "crate" | "super" | "self")
                    || children.last().unwrap().contains(token)) =>
            {
                let mut trees = Vec::new();
                let next = use_tree(tokens, i, Vec::new(), &mut trees);
                for tree in trees {
                    if let Some(target) = resolve(&here, &tree) {
                        walk.paths.push((here.clone(), target, tokens[i].line));
                    }
                }
                i = next;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    walk
}

/// Reads the path (or use tree) at `i` into `out`, each as its segments;
/// returns the index after it.
fn use_tree(
    tokens: &[Token],
    mut i: usize,
    mut prefix: Vec<String>,
    out: &mut Vec<Vec<String>>,
) -> usize {
    loop {
        match tokens.get(i).map(|t| t.text.as_str()) {
            Some("{") => {
                i += 1;
                loop {
                    match tokens.get(i).map(|t| t.text.as_str()) {
                        Some("}") => return i + 1,
                        Some(",") => i += 1,
                        None => return i,
                        _ => i = use_tree(tokens, i, prefix.clone(), out),
                    }
                }
            }
            Some(t) if is_ident(t) => {
                prefix.push(t.to_owned());
                if tokens.get(i + 1).is_some_and(|t| t.text == "::") {
                    i += 2;
                } else {
                    out.push(prefix);
                    return i + 1;
                }
            }
            // `a::*`, `a::<T>`: the path so far.
            _ => {
                out.push(prefix);
                return i;
            }
        }
    }
}

/// A path's segments made absolute from the module it is in.
fn resolve(here: &[String], segments: &[String]) -> Option<Vec<String>> {
    let mut target: Vec<String> = here.to_vec();
    let mut rest = segments;
    if segments.first().is_some_and(|s| s == "crate") {
        target.clear();
        rest = &segments[1..];
    }
    let mut leading = true;
    for segment in rest {
        match segment.as_str() {
            "super" if leading => {
                target.pop()?;
            }
            "self" => {}
            _ => {
                leading = false;
                target.push(segment.clone());
            }
        }
    }
    Some(target)
}

/// Every cycle's nodes, one line each: first among the submodules, then
/// among the top-level modules.
fn cycles(edges: &Edges) -> Vec<String> {
    let top: Edges = edges
        .iter()
        .filter_map(|((from, to), seen)| {
            let (from, to) = (top_of(from), top_of(to));
            (from != to).then(|| ((from, to), seen.clone()))
        })
        .fold(Edges::new(), |mut top, (key, seen)| {
            top.entry(key).or_insert(seen);
            top
        });
    let mut found = Vec::new();
    for (graph, kind) in [(edges, "submodules"), (&top, "top-level modules")] {
        for cycle in find_cycles(graph) {
            let mut line = format!("{kind}: {}", cycle.join(" -> "));
            for pair in cycle.windows(2) {
                let seen = &graph[&(pair[0].clone(), pair[1].clone())];
                line.push_str(&format!("\n    {} -> {} at {seen}", pair[0], pair[1]));
            }
            found.push(line);
        }
    }
    found
}

fn top_of(node: &str) -> String {
    node.split("::").next().unwrap().to_owned()
}

/// One cycle through each strongly connected group of nodes, closed
/// (`a -> b -> a`), starting from its smallest node.
fn find_cycles(edges: &Edges) -> Vec<Vec<String>> {
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, to) in edges.keys() {
        next.entry(from).or_default().push(to);
    }
    let mut cycles: Vec<Vec<String>> = Vec::new();
    let mut covered: BTreeSet<String> = BTreeSet::new();
    for start in next.keys().copied() {
        if covered.contains(start) {
            continue;
        }
        // The shortest way back to `start`, breadth first.
        let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        let mut closing = None;
        while let Some(node) = queue.pop_front() {
            for &to in next.get(node).into_iter().flatten() {
                if to == start {
                    closing = Some(node);
                    break;
                }
                if !parent.contains_key(to) {
                    parent.insert(to, node);
                    queue.push_back(to);
                }
            }
            if closing.is_some() {
                break;
            }
        }
        if let Some(mut node) = closing {
            let mut cycle = vec![start.to_owned()];
            let mut back = vec![node.to_owned()];
            while node != start {
                node = parent[node];
                back.push(node.to_owned());
            }
            back.pop();
            back.reverse();
            cycle.extend(back);
            cycle.push(start.to_owned());
            covered.extend(cycle.iter().cloned());
            cycles.push(cycle);
        }
    }
    cycles
}

struct Token {
    text: String,
    line: usize,
}

fn tokens(text: &str) -> Vec<String> {
    located_tokens(text).into_iter().map(|t| t.text).collect()
}

fn is_ident(text: &str) -> bool {
    text.starts_with(|c: char| c.is_alphabetic() || c == '_')
}

/// Identifiers, `::` and single punctuation; comments, strings, character
/// literals, lifetimes and numbers left out.
fn located_tokens(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut line = 1;
    let mut i = 0;
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    while i < chars.len() {
        let c = chars[i];
        let start_line = line;
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && at(i + 1) == '/' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            let mut nesting = 0;
            loop {
                if i >= chars.len() {
                    break;
                }
                if chars[i] == '/' && at(i + 1) == '*' {
                    nesting += 1;
                    i += 2;
                } else if chars[i] == '*' && at(i + 1) == '/' {
                    nesting -= 1;
                    i += 2;
                    if nesting == 0 {
                        break;
                    }
                } else {
                    line += usize::from(chars[i] == '\n');
                    i += 1;
                }
            }
        } else if c == '"' || ((c == 'r' || c == 'b') && raw_or_byte_string(&chars, i).is_some()) {
            let (hashes, body) =
                if c == '"' { (None, i + 1) } else { raw_or_byte_string(&chars, i).unwrap() };
            i = body;
            while i < chars.len() {
                let d = chars[i];
                line += usize::from(d == '\n');
                if hashes.is_none() && d == '\\' {
                    i += 2;
                    continue;
                }
                if d == '"' && (0..hashes.unwrap_or(0)).all(|k| at(i + 1 + k) == '#') {
                    i += 1 + hashes.unwrap_or(0);
                    break;
                }
                i += 1;
            }
        } else if c == '\'' || (c == 'b' && at(i + 1) == '\'') {
            let q = if c == 'b' { i + 1 } else { i };
            if at(q + 1) == '\\' {
                // An escaped character: to the closing quote.
                i = q + 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(q + 2) == '\'' {
                i = q + 3;
            } else {
                // A lifetime or label.
                i = q + 1;
                while at(i).is_alphanumeric() || at(i) == '_' {
                    i += 1;
                }
            }
        } else if c.is_alphabetic() || c == '_' {
            let begin = i;
            while at(i).is_alphanumeric() || at(i) == '_' {
                i += 1;
            }
            let word: String = chars[begin..i].iter().collect();
            // `r#ident` is the identifier.
            if word == "r" && at(i) == '#' && (at(i + 1).is_alphabetic() || at(i + 1) == '_') {
                i += 1;
                continue;
            }
            tokens.push(Token { text: word, line: start_line });
        } else if c.is_ascii_digit() {
            while at(i).is_alphanumeric()
                || at(i) == '_'
                || at(i) == '.' && at(i + 1).is_ascii_digit()
            {
                i += 1;
            }
        } else if c == ':' && at(i + 1) == ':' {
            tokens.push(Token { text: "::".into(), line });
            i += 2;
        } else {
            tokens.push(Token { text: c.to_string(), line });
            i += 1;
        }
    }
    tokens
}

/// At `r"`, `r#"`, `b"`, `br#"`: the number of `#` (`None` for a plain
/// byte string, which has escapes) and where the body starts.
fn raw_or_byte_string(chars: &[char], i: usize) -> Option<(Option<usize>, usize)> {
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    // Not the end of an identifier such as `for` or `verb`.
    if i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_') {
        return None;
    }
    let mut j = i;
    if at(j) == 'b' {
        j += 1;
        if at(j) == '"' {
            return Some((None, j + 1));
        }
    }
    if at(j) != 'r' {
        return None;
    }
    j += 1;
    let mut hashes = 0;
    while at(j) == '#' {
        hashes += 1;
        j += 1;
    }
    (at(j) == '"').then_some((Some(hashes), j + 1))
}
