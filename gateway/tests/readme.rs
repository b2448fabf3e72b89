//! The configuration examples in docs/configuration.md are configs the
//! gateway accepts: every key in them exists (tables reject unknown keys) and
//! every value passes the checks. A `# or` line in a block starts an alternative
//! for the tables it names, e.g. the Kubernetes `[backend]`.

use dask_gateway::config::{AuthKind, BackendConfig, Config, LogFormat};

const README: &str = include_str!("../../docs/configuration.md");

/// The bodies of the page's ```toml blocks.
fn toml_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```toml") => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "a ```toml block is not closed");
    blocks
}

/// The table a line opens (`[a]` or `[[a]]` gives `a`), if it opens one.
fn table_name(line: &str) -> Option<&str> {
    let line = line.split('#').next()?.trim();
    let name = line.strip_prefix('[')?.strip_suffix(']')?;
    Some(name.trim_matches(['[', ']']).trim())
}

/// Every complete config a block describes: the block up to its first `# or`,
/// then, for each alternative, that config with the alternative's tables
/// replacing the ones of the same name.
fn configs(block: &str) -> Vec<String> {
    let mut parts = block.split("\n# or\n");
    let base = parts.next().unwrap_or_default().to_owned();
    let mut configs = vec![base.clone()];
    for alternative in parts {
        let replaced: Vec<&str> = alternative.lines().filter_map(table_name).collect();
        let mut kept = String::new();
        let mut keep = true;
        for line in base.lines() {
            if let Some(name) = table_name(line) {
                keep = !replaced.contains(&name);
            }
            if keep {
                kept.push_str(line);
                kept.push('\n');
            }
        }
        configs.push(kept + alternative);
    }
    configs
}

#[test]
fn every_toml_example_in_the_readme_is_a_valid_config() {
    let blocks = toml_blocks(README);
    assert!(!blocks.is_empty(), "docs/configuration.md has no ```toml block");
    let mut parsed = Vec::new();
    for block in &blocks {
        for text in configs(block) {
            let config = Config::parse(&text).unwrap_or_else(|e| panic!("{e}\nin:\n{text}"));
            parsed.push(config);
        }
    }

    // The example is the full one: both backends, and the values it shows.
    let local = parsed.iter().find(|c| matches!(c.backend, BackendConfig::Local(_)));
    let local = local.expect("an example with the local backend");
    assert_eq!(local.listen.to_string(), "127.0.0.1:8000");
    assert_eq!(local.log_format, LogFormat::Text);
    assert_eq!(local.auth.kind, AuthKind::Simple);
    assert_eq!(local.auth.tokens[0].user, "ci-bot");
    assert_eq!(local.options.profiles[0].name, "small");
    assert_eq!(local.options.fields[0].field, "environment");
    assert_eq!(local.limits.user_max_clusters, Some(3));
    assert_eq!(local.limits.cluster_max_workers, Some(32));
    let kubernetes = parsed.iter().find_map(|c| match &c.backend {
        BackendConfig::Kubernetes(k) => Some(k),
        BackendConfig::Local(_) => None,
    });
    let kubernetes = kubernetes.expect("an example with the Kubernetes backend");
    assert_eq!(kubernetes.image, "dask-rs/worker:latest");
    assert_eq!(kubernetes.namespace.as_deref(), Some("dask"));
}

#[test]
fn alternatives_replace_the_tables_they_name() {
    let block = "listen = \"127.0.0.1:1\"\n[a]\nx = 1\n[b]\ny = 2\n# or\n[a]\nx = 3\n";
    assert_eq!(
        configs(block),
        [
            "listen = \"127.0.0.1:1\"\n[a]\nx = 1\n[b]\ny = 2",
            "listen = \"127.0.0.1:1\"\n[b]\ny = 2\n[a]\nx = 3\n",
        ]
    );
}
