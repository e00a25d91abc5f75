//! The docs stay true to the tree: every relative link in README.md, ARCHITECTURE.md, BENCHMARKS.md and docs/*.md
//! resolves to a file that exists (and, for `path.md#anchor`, to a heading of that file, slugged as GitHub does),
//! and every gRPC method of `proto/baton/v1/baton.proto` is documented in the API doc
//! (docs/rollup-operators.md), as `Service/Method`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The repository root (this crate is `proto/`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("proto/ has a parent")
        .to_path_buf()
}

/// The markdown files whose links are checked.
fn doc_files(root: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = ["README.md", "ARCHITECTURE.md", "BENCHMARKS.md"]
        .iter()
        .map(|f| root.join(f))
        .collect();
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .map(|e| e.expect("a readable docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The lines of a markdown file outside fenced code blocks, with their 1-based numbers.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut fence: Option<&str> = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        let marker = if t.starts_with("```") {
            Some("```")
        } else if t.starts_with("~~~") {
            Some("~~~")
        } else {
            None
        };
        match (fence, marker) {
            (None, Some(m)) => fence = Some(m),
            (Some(f), Some(m)) if f == m => fence = None,
            (None, None) => out.push((i + 1, line)),
            _ => {}
        }
    }
    out
}

/// A line without its inline code spans (a link inside backticks is not a link).
fn without_code_spans(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        out.push_str(&rest[..start]);
        let ticks = rest[start..].chars().take_while(|&c| c == '`').count();
        let delim = &rest[start..start + ticks];
        let after = &rest[start + ticks..];
        match after.find(delim) {
            Some(end) => rest = &after[end + ticks..],
            None => {
                // An unmatched backtick is literal text.
                out.push_str(delim);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The targets of the inline links `[text](target)` and images `![alt](target)` on a line.
fn link_targets(line: &str) -> Vec<String> {
    let line = without_code_spans(line);
    let mut targets = Vec::new();
    let mut rest = line.as_str();
    while let Some(i) = rest.find("](") {
        let after = &rest[i + 2..];
        // The target ends at the parenthesis that closes the one opened here.
        let mut depth = 1usize;
        let mut end = None;
        for (j, c) in after.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(j);
                        break;
                    }
                }
                _ => {}
            }
        }
        let Some(end) = end else { break };
        let raw = after[..end].trim();
        // `<target>` and `target "title"` forms.
        let target = if let Some(inner) = raw.strip_prefix('<') {
            inner.split('>').next().unwrap_or("")
        } else {
            raw.split_whitespace().next().unwrap_or("")
        };
        targets.push(target.to_string());
        rest = &after[end + 1..];
    }
    targets
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces turned into hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}

/// Every anchor a markdown file's headings define (a repeated heading gets `-1`, `-2`, ... as on GitHub).
fn anchors(text: &str) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for (_, line) in prose_lines(text) {
        let t = line.trim_start();
        let level = t.chars().take_while(|&c| c == '#').count();
        if !(1..=6).contains(&level) || !t[level..].starts_with(' ') {
            continue;
        }
        let base = slug(t[level..].trim().trim_end_matches('#'));
        let n = seen.entry(base.clone()).or_insert(0);
        out.push(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    out
}

/// What is wrong with one link target of `file`, if anything.
fn check_target(file: &Path, target: &str) -> Option<String> {
    if target.is_empty() {
        return Some("an empty link target".into());
    }
    if target.contains("://") || target.starts_with("mailto:") {
        return None; // external: not checked here
    }
    let (path, anchor) = match target.split_once('#') {
        Some((p, a)) => (p, Some(a)),
        None => (target, None),
    };
    let resolved = if path.is_empty() {
        file.to_path_buf()
    } else {
        file.parent().expect("a file has a folder").join(path)
    };
    if !resolved.exists() {
        return Some(format!("`{target}`: {} does not exist", resolved.display()));
    }
    let anchor = anchor?;
    if resolved.extension().is_none_or(|e| e != "md") {
        return None; // anchors are checked in markdown files only
    }
    let found = anchors(&read(&resolved));
    if found.iter().any(|a| a == anchor) {
        None
    } else {
        Some(format!(
            "`{target}`: no heading with anchor `#{anchor}` in {}",
            resolved.display()
        ))
    }
}

/// Every broken relative link among `files`, as `file:line: why`.
fn broken_links(files: &[PathBuf]) -> Vec<String> {
    let mut broken = Vec::new();
    for file in files {
        let text = read(file);
        for (n, line) in prose_lines(&text) {
            for target in link_targets(line) {
                if let Some(why) = check_target(file, &target) {
                    broken.push(format!("{}:{n}: {why}", file.display()));
                }
            }
        }
    }
    broken
}

#[test]
fn every_relative_link_in_the_docs_resolves() {
    let root = root();
    let files = doc_files(&root);
    assert!(
        files.len() >= 7,
        "expected README, ARCHITECTURE, BENCHMARKS and the docs/ files, found {files:?}"
    );
    let links: usize = files
        .iter()
        .map(|f| {
            prose_lines(&read(f))
                .iter()
                .map(|(_, l)| link_targets(l).len())
                .sum::<usize>()
        })
        .sum();
    assert!(
        links > 30,
        "only {links} links found: is the link parser broken?"
    );
    let broken = broken_links(&files);
    assert!(
        broken.is_empty(),
        "{} broken link(s):\n{}",
        broken.len(),
        broken.join("\n")
    );
}

#[test]
fn the_checker_catches_a_broken_link_and_a_missing_anchor() {
    let dir = std::env::temp_dir().join(format!("baton-docs-check-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("docs")).expect("temp dir");
    let readme = dir.join("README.md");
    std::fs::write(
        &readme,
        "# Top\n\n## Heading: with `code`, punctuation (2026-12-01)\n\n\
         [ok](docs/a.md) [ok](docs/a.md#the-section) [ok](#heading-with-code-punctuation-2026-12-01)\n\
         [missing](docs/nope.md) [bad anchor](docs/a.md#nowhere) `[in code](nope.md)`\n\
         ```\n[in a fence](nope.md)\n```\n[external](https://example.com/x.md)\n",
    )
    .expect("write");
    std::fs::write(dir.join("docs/a.md"), "# A\n\n## The section\n").expect("write");
    let broken = broken_links(&[readme]);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(broken.len(), 2, "{broken:#?}");
    assert!(broken[0].contains("nope.md") && broken[0].contains(":6:"));
    assert!(broken[1].contains("#nowhere"));
}

#[test]
fn slugs_match_github() {
    assert_eq!(
        slug("The engine floor (2026-12-01)"),
        "the-engine-floor-2026-12-01"
    );
    assert_eq!(
        slug("Ed25519: is a faster verifier worth it?"),
        "ed25519-is-a-faster-verifier-worth-it"
    );
    assert_eq!(
        slug("Delivery guarantee of `StreamBatches`"),
        "delivery-guarantee-of-streambatches"
    );
    assert_eq!(
        slug("The validator set: epochs, staking, joining and leaving"),
        "the-validator-set-epochs-staking-joining-and-leaving"
    );
    assert_eq!(anchors("# A\n## A\n## A\n"), ["a", "a-1", "a-2"]);
}

/// The gRPC methods of the proto, as `Service/Method`.
fn proto_methods(proto: &str) -> Vec<String> {
    let mut service = None;
    let mut methods = Vec::new();
    for line in proto.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("service ") {
            service = rest.split_whitespace().next().map(str::to_string);
        } else if let Some(rest) = t.strip_prefix("rpc ") {
            let name = rest.split('(').next().unwrap_or("").trim();
            let service = service.as_deref().expect("an rpc inside a service");
            methods.push(format!("{service}/{name}"));
        }
    }
    methods
}

#[test]
fn every_grpc_method_is_in_the_api_doc() {
    let root = root();
    let proto = read(&root.join("proto/proto/baton/v1/baton.proto"));
    let methods = proto_methods(&proto);
    assert!(
        methods.len() >= 10,
        "expected the RollupService and NodeService methods, found {methods:?}"
    );
    let api = read(&root.join("docs/rollup-operators.md"));
    let missing: Vec<&String> = methods
        .iter()
        .filter(|m| !api.contains(&format!("`{m}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "gRPC methods not documented in docs/rollup-operators.md (as `Service/Method`): {missing:?}"
    );
}
