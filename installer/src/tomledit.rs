//! Comment-preserving edits of containerd configuration files with `toml_edit`.
//!
//! The runtime is one table, `<cri plugin>.containerd.runtimes.wasmpod`, whose place
//! depends on the config schema version ([`ConfigVersion::runtime_table`]): writing the 1.x
//! path into a version 3 file is accepted by containerd 2.x and silently ignored, the classic
//! failure this module exists to avoid. Edits touch only the keys they own: a value already
//! equal to the wanted one is left as it is (with its comments and formatting), so editing an
//! already-edited file yields the same bytes — the basis of idempotence.
//!
//! Trade-off: only standard and dotted tables are edited; a CRI section written as inline
//! tables (`runtimes = { ... }`) is refused rather than rewritten.

use std::fmt;

use toml_edit::{Array, DocumentMut, Item, Table, Value};

/// A configuration file that is not valid TOML, or has a shape we will not edit.
#[derive(Debug, thiserror::Error)]
pub enum TomlError {
    /// Not valid TOML.
    #[error("{file}: not valid TOML: {source}")]
    Parse {
        /// The file (host path) being parsed.
        file: String,
        /// The parser's message.
        #[source]
        source: Box<toml_edit::TomlError>,
    },
    /// A key we need to descend through is not a table.
    #[error("{file}: `{key}` is not a table; refusing to edit it")]
    NotATable {
        /// The file (host path).
        file: String,
        /// The dotted key.
        key: String,
    },
    /// `imports` is not an array of strings.
    #[error("{file}: `imports` is not an array of strings")]
    BadImports {
        /// The file (host path).
        file: String,
    },
}

/// containerd's configuration schema version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ConfigVersion {
    /// No `version` key: containerd 1.x reads it as version 1 (short plugin names, `plugins.cri`).
    V1,
    /// containerd 1.5–1.7 (`plugins."io.containerd.grpc.v1.cri"`); 2.x migrates it on load.
    V2,
    /// containerd 2.x (`plugins."io.containerd.cri.v1.runtime"`).
    V3,
}

impl ConfigVersion {
    /// The version for a `version = n` key.
    pub fn from_number(n: i64) -> Option<Self> {
        match n {
            1 => Some(Self::V1),
            2 => Some(Self::V2),
            3 => Some(Self::V3),
            _ => None,
        }
    }

    /// The number written as `version = n`.
    pub fn number(self) -> i64 {
        match self {
            Self::V1 => 1,
            Self::V2 => 2,
            Self::V3 => 3,
        }
    }

    /// The table holding the CRI runtime configuration (`containerd.runtimes` lives in it).
    pub fn cri_plugin(self) -> [&'static str; 2] {
        match self {
            Self::V1 => ["plugins", "cri"],
            Self::V2 => ["plugins", "io.containerd.grpc.v1.cri"],
            Self::V3 => ["plugins", "io.containerd.cri.v1.runtime"],
        }
    }

    /// The full key path of the runtime table for `handler`.
    pub fn runtime_table(self, handler: &str) -> Vec<String> {
        let mut keys: Vec<String> = self.cri_plugin().iter().map(|s| (*s).to_owned()).collect();
        keys.extend(["containerd", "runtimes", handler].map(str::to_owned));
        keys
    }
}

impl fmt::Display for ConfigVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "version {}", self.number())
    }
}

/// What the runtime table should hold.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeSpec {
    /// The runtime handler name (`wasmpod`).
    pub handler: String,
    /// `runtime_type` (`io.containerd.wasmpod.v1`).
    pub runtime_type: String,
    /// `runtime_path`: the shim's absolute host path, so containerd need not find it on PATH.
    pub runtime_path: Option<String>,
    /// `options.SystemdCgroup`.
    pub systemd_cgroup: bool,
    /// Further `options` entries (`key`, TOML value text).
    pub options: Vec<(String, String)>,
}

/// Render a dotted key path as TOML (`plugins."io.containerd.grpc.v1.cri"...`).
pub fn dotted(keys: &[String]) -> String {
    keys.iter()
        .map(|k| {
            if !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                k.clone()
            } else {
                format!("{k:?}")
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Parse `text`; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<DocumentMut, TomlError> {
    text.parse::<DocumentMut>().map_err(|e| TomlError::Parse {
        file: file.to_owned(),
        source: Box::new(e),
    })
}

/// The `version = n` key, if present and known.
pub fn config_version(doc: &DocumentMut) -> Option<ConfigVersion> {
    doc.get("version")
        .and_then(Item::as_integer)
        .and_then(ConfigVersion::from_number)
}

/// True when the document has no keys at all (only comments or whitespace).
pub fn is_empty(doc: &DocumentMut) -> bool {
    doc.as_table().is_empty()
}

/// The item at `keys`, if every step is a table.
pub fn get<'a>(doc: &'a DocumentMut, keys: &[String]) -> Option<&'a Item> {
    let mut item = doc.as_item();
    for k in keys {
        item = item.as_table_like()?.get(k)?;
    }
    Some(item)
}

/// Descend to the table at `keys`, creating missing steps (implicit parents, an explicit
/// last table placed at the end of the file after a blank line and `comment`).
fn table_mut<'a>(
    file: &str,
    doc: &'a mut DocumentMut,
    keys: &[String],
    comment: Option<&str>,
) -> Result<&'a mut dyn toml_edit::TableLike, TomlError> {
    let mut table: &mut dyn toml_edit::TableLike = doc.as_table_mut();
    for (i, k) in keys.iter().enumerate() {
        let last = i + 1 == keys.len();
        if table.get(k).is_none() {
            let mut t = Table::new();
            if last {
                let prefix = match comment {
                    Some(c) => format!("\n# {c}\n"),
                    None => "\n".to_owned(),
                };
                t.decor_mut().set_prefix(prefix);
            } else {
                t.set_implicit(true);
            }
            table.insert(k, Item::Table(t));
        }
        let item = table.get_mut(k).expect("inserted above");
        if item.is_inline_table() || !item.is_table_like() {
            return Err(TomlError::NotATable {
                file: file.to_owned(),
                key: dotted(&keys[..=i]),
            });
        }
        table = item.as_table_like_mut().expect("checked above");
    }
    Ok(table)
}

fn same_value(item: Option<&Item>, want: &Value) -> bool {
    let Some(Item::Value(have)) = item else {
        return false;
    };
    let mut have = have.clone();
    have.decor_mut().clear();
    let mut want = want.clone();
    want.decor_mut().clear();
    have.to_string() == want.to_string()
}

fn set_value(table: &mut dyn toml_edit::TableLike, key: &str, want: Value) {
    if !same_value(table.get(key), &want) {
        table.insert(key, Item::Value(want));
    }
}

/// Write the runtime table for `spec` at the place `version` reads it from. Keys already
/// holding the wanted values are not touched; other keys in the table are kept.
pub fn set_runtime(
    file: &str,
    doc: &mut DocumentMut,
    version: ConfigVersion,
    spec: &RuntimeSpec,
) -> Result<(), TomlError> {
    let keys = version.runtime_table(&spec.handler);
    let comment =
        "wasmpod runtime, written by wasmpod-installer (removed by `wasmpod-installer uninstall`)";
    let table = table_mut(file, doc, &keys, Some(comment))?;
    set_value(
        table,
        "runtime_type",
        Value::from(spec.runtime_type.as_str()),
    );
    match &spec.runtime_path {
        Some(path) => set_value(table, "runtime_path", Value::from(path.as_str())),
        None => {
            table.remove("runtime_path");
        }
    }
    let mut opt_keys = keys.clone();
    opt_keys.push("options".to_owned());
    let options = table_mut(file, doc, &opt_keys, None)?;
    set_value(options, "SystemdCgroup", Value::from(spec.systemd_cgroup));
    for (key, text) in &spec.options {
        let value = text
            .parse::<Value>()
            .unwrap_or_else(|_| Value::from(text.as_str()));
        set_value(options, key, value);
    }
    Ok(())
}

/// Whether the runtime table for `handler` exists at `version`'s place.
pub fn has_runtime(doc: &DocumentMut, version: ConfigVersion, handler: &str) -> bool {
    get(doc, &version.runtime_table(handler)).is_some()
}

/// `runtime_type` of the runtime `handler`, if set.
pub fn runtime_type<'a>(
    doc: &'a DocumentMut,
    version: ConfigVersion,
    handler: &str,
) -> Option<&'a str> {
    get(doc, &version.runtime_table(handler))?
        .as_table_like()?
        .get("runtime_type")?
        .as_str()
}

/// Remove the runtime table for `handler`, and parents left empty that are implicit (they
/// only existed to hold it). Returns whether anything was removed.
pub fn remove_runtime(doc: &mut DocumentMut, version: ConfigVersion, handler: &str) -> bool {
    let keys = version.runtime_table(handler);
    let removed = remove_at(doc.as_table_mut(), &keys);
    removed.is_some()
}

fn remove_at(table: &mut dyn toml_edit::TableLike, keys: &[String]) -> Option<()> {
    let (first, rest) = keys.split_first()?;
    if rest.is_empty() {
        return table.remove(first).map(|_| ());
    }
    let child = table.get_mut(first)?.as_table_like_mut()?;
    remove_at(child, rest)?;
    let prune = table
        .get(first)
        .and_then(Item::as_table)
        .is_some_and(|t| t.is_empty() && t.is_implicit());
    if prune {
        table.remove(first);
    }
    Some(())
}

/// The `imports` entries.
pub fn imports(file: &str, doc: &DocumentMut) -> Result<Vec<String>, TomlError> {
    let Some(item) = doc.get("imports") else {
        return Ok(Vec::new());
    };
    let bad = || TomlError::BadImports {
        file: file.to_owned(),
    };
    item.as_array()
        .ok_or_else(bad)?
        .iter()
        .map(|v| v.as_str().map(str::to_owned).ok_or_else(bad))
        .collect()
}

/// Whether an `imports` entry (an absolute path or glob) names `path`.
pub fn import_covers(pattern: &str, path: &str) -> bool {
    let p: Vec<&str> = pattern.split('/').filter(|s| !s.is_empty()).collect();
    let f: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    p.len() == f.len()
        && p.iter()
            .zip(&f)
            .all(|(p, f)| glob_segment(p.as_bytes(), f.as_bytes()))
}

fn glob_segment(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob_segment(&p[1..], s) || (!s.is_empty() && glob_segment(p, &s[1..])),
        (Some(b'?'), Some(_)) => glob_segment(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob_segment(&p[1..], &s[1..]),
        _ => false,
    }
}

/// Add `path` to `imports` unless an entry already covers it; returns whether it was added.
pub fn ensure_import(file: &str, doc: &mut DocumentMut, path: &str) -> Result<bool, TomlError> {
    if imports(file, doc)?.iter().any(|i| import_covers(i, path)) {
        return Ok(false);
    }
    match doc.get_mut("imports").and_then(Item::as_array_mut) {
        Some(array) => array.push(path),
        None => {
            let mut array = Array::new();
            array.push(path);
            doc.insert("imports", Item::Value(Value::Array(array)));
        }
    }
    Ok(true)
}

/// Remove the exact entry `path` from `imports`; returns whether it was there.
pub fn remove_import(doc: &mut DocumentMut, path: &str) -> bool {
    let Some(array) = doc.get_mut("imports").and_then(Item::as_array_mut) else {
        return false;
    };
    let before = array.len();
    array.retain(|v| v.as_str() != Some(path));
    before != array.len()
}

/// A standalone file holding only `version` and the runtime table (a drop-in, a k0s
/// drop-in, or the body of a k3s template block).
pub fn render_runtime_file(
    version: ConfigVersion,
    spec: &RuntimeSpec,
    with_version: bool,
) -> String {
    let mut doc = DocumentMut::new();
    if with_version {
        doc.insert("version", toml_edit::value(version.number()));
    }
    set_runtime("(new)", &mut doc, version, spec).expect("a new document has no conflicting keys");
    let text = doc.to_string();
    if with_version {
        text
    } else {
        text.trim_start_matches('\n').to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RuntimeSpec {
        RuntimeSpec {
            handler: "wasmpod".into(),
            runtime_type: "io.containerd.wasmpod.v1".into(),
            runtime_path: Some("/usr/local/bin/containerd-shim-wasmpod-v1".into()),
            systemd_cgroup: true,
            options: vec![("CacheDir".into(), "\"/var/lib/wasmpod/cache\"".into())],
        }
    }

    #[test]
    fn globs_match_like_filepath_glob() {
        assert!(import_covers(
            "/etc/containerd/conf.d/*.toml",
            "/etc/containerd/conf.d/wasmpod.toml"
        ));
        assert!(import_covers(
            "/etc/containerd/conf.d/wasmpod.toml",
            "/etc/containerd/conf.d/wasmpod.toml"
        ));
        assert!(!import_covers(
            "/etc/containerd/*.toml",
            "/etc/containerd/conf.d/wasmpod.toml"
        ));
        assert!(!import_covers(
            "/etc/containerd/conf.d/*.conf",
            "/etc/containerd/conf.d/wasmpod.toml"
        ));
        assert!(import_covers(
            "/etc/containerd/conf.d/wasm?od.toml",
            "/etc/containerd/conf.d/wasmpod.toml"
        ));
    }

    #[test]
    fn runtime_goes_to_the_version_path() {
        for (version, plugin) in [
            (
                ConfigVersion::V2,
                "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmpod]",
            ),
            (
                ConfigVersion::V3,
                "[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.wasmpod]",
            ),
        ] {
            let text = render_runtime_file(version, &spec(), true);
            assert!(
                text.starts_with(&format!("version = {}\n", version.number())),
                "{text}"
            );
            assert!(text.contains(plugin), "{text}");
            assert!(text.contains("SystemdCgroup = true"), "{text}");
            let doc = parse("x", &text).unwrap();
            assert_eq!(
                runtime_type(&doc, version, "wasmpod"),
                Some("io.containerd.wasmpod.v1")
            );
        }
    }

    #[test]
    fn setting_twice_is_byte_identical_and_removal_prunes_implicit_parents() {
        let original = "# keep me\nversion = 2\n";
        let mut doc = parse("x", original).unwrap();
        set_runtime("x", &mut doc, ConfigVersion::V2, &spec()).unwrap();
        let once = doc.to_string();
        let mut again = parse("x", &once).unwrap();
        set_runtime("x", &mut again, ConfigVersion::V2, &spec()).unwrap();
        assert_eq!(again.to_string(), once);
        assert!(remove_runtime(&mut again, ConfigVersion::V2, "wasmpod"));
        assert!(again.get("plugins").is_none(), "{again}");
    }

    #[test]
    fn inline_tables_are_refused() {
        let mut doc = parse("x", "version = 2\nplugins = { a = 1 }\n").unwrap();
        let err = set_runtime("x", &mut doc, ConfigVersion::V2, &spec()).unwrap_err();
        assert!(matches!(err, TomlError::NotATable { .. }), "{err}");
    }
}
