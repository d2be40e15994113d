//! The runtime layer: providers and routes added through the admin API, kept as the entries a
//! user would write in `[[providers]]` and `[[routes]]` (JSON objects of the same fields), and
//! merged onto the config file's document so that one validator, the one `check` runs, judges
//! the whole. Literal secrets in the layer are sealed at rest and masked whenever shown.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Config, Issue};

/// An entry as written: `{ "name": ..., "kind": ..., "keys": [...] }` or `{ "model": ...,
/// "targets": [...] }`.
pub type Entry = Map<String, Value>;

/// Providers and routes added at run time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Layer {
    /// `[[providers]]` entries, by `name`.
    #[serde(default)]
    pub providers: Vec<Entry>,
    /// `[[routes]]` entries, by `model`.
    #[serde(default)]
    pub routes: Vec<Entry>,
}

/// The two kinds of entity the layer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `[[providers]]`, named by `name`.
    Provider,
    /// `[[routes]]`, named by `model`.
    Route,
}

impl Kind {
    /// The config array: `providers` or `routes`.
    pub fn array(self) -> &'static str {
        match self {
            Self::Provider => "providers",
            Self::Route => "routes",
        }
    }

    /// The field that names an entry.
    pub fn id_field(self) -> &'static str {
        match self {
            Self::Provider => "name",
            Self::Route => "model",
        }
    }

    /// In words, for messages.
    pub fn noun(self) -> &'static str {
        match self {
            Self::Provider => "provider",
            Self::Route => "route",
        }
    }
}

impl Layer {
    /// The entries of `kind`.
    pub fn entries(&self, kind: Kind) -> &Vec<Entry> {
        match kind {
            Kind::Provider => &self.providers,
            Kind::Route => &self.routes,
        }
    }

    /// The entries of `kind`, to change.
    pub fn entries_mut(&mut self, kind: Kind) -> &mut Vec<Entry> {
        match kind {
            Kind::Provider => &mut self.providers,
            Kind::Route => &mut self.routes,
        }
    }

    /// The entry of `kind` named `id`.
    pub fn find(&self, kind: Kind, id: &str) -> Option<&Entry> {
        self.entries(kind)
            .iter()
            .find(|e| entry_id(kind, e) == Some(id))
    }

    /// Applies `f` to every secret string in the layer (only providers hold secrets).
    pub fn secrets_mut<E>(
        &mut self,
        mut f: impl FnMut(&mut String) -> Result<(), E>,
    ) -> Result<(), E> {
        for p in &mut self.providers {
            provider_secrets_mut(p, &mut f)?;
        }
        Ok(())
    }

    /// The layer as shown: every literal secret masked.
    pub fn masked(&self) -> Layer {
        let mut out = self.clone();
        let _ = out.secrets_mut(|s| {
            *s = mask(s);
            Ok::<(), ()>(())
        });
        out
    }
}

/// The name of an entry (its `name` or `model`).
pub fn entry_id(kind: Kind, e: &Entry) -> Option<&str> {
    e.get(kind.id_field()).and_then(Value::as_str)
}

/// Applies `f` to each secret of a provider entry: its keys, header values, AWS credentials, and
/// a Vertex service-account key given inline (a path is not a secret).
pub fn provider_secrets_mut<E>(
    entry: &mut Entry,
    f: &mut impl FnMut(&mut String) -> Result<(), E>,
) -> Result<(), E> {
    if let Some(Value::Array(keys)) = entry.get_mut("keys") {
        for k in keys {
            match k {
                Value::String(s) => f(s)?,
                Value::Object(o) => {
                    if let Some(Value::String(s)) = o.get_mut("value") {
                        f(s)?;
                    }
                }
                _ => {}
            }
        }
    }
    if let Some(Value::Object(h)) = entry.get_mut("headers") {
        for v in h.values_mut() {
            if let Value::String(s) = v {
                f(s)?;
            }
        }
    }
    for field in [
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "credentials",
    ] {
        if let Some(Value::String(s)) = entry.get_mut(field)
            && (field != "credentials" || s.trim_start().starts_with('{') || is_sealed(s))
        {
            f(s)?;
        }
    }
    Ok(())
}

fn is_sealed(s: &str) -> bool {
    s.starts_with("sealed:")
}

/// Whether a secret field holds a literal (not an `env.NAME` reference).
pub fn is_literal(s: &str) -> bool {
    !s.starts_with("env.")
}

/// How a secret is shown: `env.NAME` as it is; a literal as `****` and, when long enough not to
/// give it away, its last four characters.
pub fn mask(s: &str) -> String {
    if !is_literal(s) {
        return s.to_owned();
    }
    let chars: Vec<char> = s.chars().collect();
    if chars.len() >= 16 && !is_sealed(s) {
        let tail: String = chars[chars.len() - 4..].iter().collect();
        format!("****{tail}")
    } else {
        "****".to_owned()
    }
}

/// The document the layer is merged onto: the file as written, or, in zero-config, the providers
/// found in the environment written as entries with `env.NAME` keys.
pub fn base(cfg: &Config) -> toml::Table {
    if let Some(raw) = &cfg.raw {
        return (**raw).clone();
    }
    let mut providers = Vec::new();
    for p in &cfg.providers {
        let mut t = toml::Table::new();
        t.insert("name".into(), p.name.clone().into());
        t.insert("kind".into(), p.kind.as_str().into());
        t.insert("base_url".into(), p.base_url.clone().into());
        let keys: Vec<toml::Value> = p.keys.iter().map(|k| k.source.clone().into()).collect();
        if !keys.is_empty() {
            t.insert("keys".into(), keys.into());
        }
        if let Some(aws) = &p.aws {
            t.insert("region".into(), aws.region.clone().into());
            if aws.credentials.is_some() {
                t.insert("aws_access_key_id".into(), "env.AWS_ACCESS_KEY_ID".into());
                t.insert(
                    "aws_secret_access_key".into(),
                    "env.AWS_SECRET_ACCESS_KEY".into(),
                );
                t.insert("aws_session_token".into(), "env.AWS_SESSION_TOKEN".into());
            }
        }
        providers.push(toml::Value::Table(t));
    }
    let mut doc = toml::Table::new();
    if !providers.is_empty() {
        doc.insert("providers".into(), providers.into());
    }
    doc
}

/// The names of the base document's entries of `kind` (file-managed, or found in the
/// environment).
pub fn base_ids(base: &toml::Table, kind: Kind) -> Vec<String> {
    base.get(kind.array())
        .and_then(toml::Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|e| e.get(kind.id_field()).and_then(toml::Value::as_str))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// How many entries of `kind` the base document has.
pub fn base_len(base: &toml::Table, kind: Kind) -> usize {
    base.get(kind.array())
        .and_then(toml::Value::as_array)
        .map_or(0, Vec::len)
}

/// Validates the base document with `layer` (secrets open) appended, as `check` would validate a
/// file holding both: the whole config, or every problem with its path.
pub fn merge(
    base: &toml::Table,
    layer: &Layer,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, Vec<Issue>> {
    let doc = document(base, layer).map_err(|i| vec![i])?;
    let text = toml::to_string(&doc)
        .map_err(|e| vec![Issue::new("", format!("cannot be written as TOML: {e}"))])?;
    Config::parse(&text, env)
}

/// The base document with the layer's entries appended to `providers` and `routes`, as a file
/// holding both would read.
pub fn document(base: &toml::Table, layer: &Layer) -> Result<toml::Table, Issue> {
    let mut doc = base.clone();
    for kind in [Kind::Provider, Kind::Route] {
        let extra = layer.entries(kind);
        if extra.is_empty() {
            continue;
        }
        let mut items = match doc.remove(kind.array()) {
            Some(toml::Value::Array(a)) => a,
            _ => Vec::new(),
        };
        for (i, e) in extra.iter().enumerate() {
            let v = toml::Value::try_from(e).map_err(|err| {
                Issue::new(
                    format!("{}[{}]", kind.array(), base_len(base, kind) + i),
                    format!("cannot be written as TOML ({err}; null values are not allowed)"),
                )
            })?;
            items.push(v);
        }
        doc.insert(kind.array().into(), items.into());
    }
    Ok(doc)
}

/// The fields that differ between two layers (pass masked layers): one change per field of an
/// entry that was changed, one per entry added or removed.
pub fn diff(before: &Layer, after: &Layer) -> Vec<(String, Option<Value>, Option<Value>)> {
    let mut out = Vec::new();
    for kind in [Kind::Provider, Kind::Route] {
        let name = |e: &Entry| entry_id(kind, e).unwrap_or_default().to_owned();
        for b in before.entries(kind) {
            let id = name(b);
            match after.find(kind, &id) {
                None => out.push((
                    format!("{}.{id}", kind.array()),
                    Some(Value::Object(b.clone())),
                    None,
                )),
                Some(a) if a != b => {
                    let mut fields: Vec<&String> = b.keys().chain(a.keys()).collect();
                    fields.sort();
                    fields.dedup();
                    for f in fields {
                        if b.get(f) != a.get(f) {
                            out.push((
                                format!("{}.{id}.{f}", kind.array()),
                                b.get(f).cloned(),
                                a.get(f).cloned(),
                            ));
                        }
                    }
                }
                Some(_) => {}
            }
        }
        for a in after.entries(kind) {
            let id = name(a);
            if before.find(kind, &id).is_none() {
                out.push((
                    format!("{}.{id}", kind.array()),
                    None,
                    Some(Value::Object(a.clone())),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn entry(v: Value) -> Entry {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn secrets_are_found_masked_and_env_references_kept() {
        let mut layer = Layer {
            providers: vec![entry(json!({
                "name": "p", "kind": "openai",
                "keys": ["sk-abcdefghijklmnop1234", {"value": "env.K", "weight": 2}],
                "headers": {"x-token": "tok-short"},
                "credentials": "/etc/sa.json"
            }))],
            routes: vec![entry(json!({"model": "r", "targets": [{"model": "p/m"}]}))],
        };
        let shown = layer.masked();
        let p = &shown.providers[0];
        assert_eq!(p["keys"][0], "****1234");
        assert_eq!(p["keys"][1]["value"], "env.K");
        assert_eq!(p["headers"]["x-token"], "****");
        assert_eq!(p["credentials"], "/etc/sa.json", "a path is not a secret");
        let mut seen = Vec::new();
        layer
            .secrets_mut(|s| {
                seen.push(s.clone());
                Ok::<(), ()>(())
            })
            .unwrap();
        assert_eq!(seen, vec!["sk-abcdefghijklmnop1234", "env.K", "tok-short"]);
    }

    #[test]
    fn the_layer_is_judged_with_the_file_and_problems_have_paths() {
        let base: toml::Table = "[[providers]]\nname = \"file\"\nkind = \"ollama\"\n"
            .parse()
            .unwrap();
        let good = Layer {
            providers: vec![entry(
                json!({"name": "api", "kind": "openai", "keys": ["sk-1"]}),
            )],
            routes: vec![entry(
                json!({"model": "r", "targets": [{"model": "file/m"}, {"model": "api/m"}]}),
            )],
        };
        let cfg = merge(&base, &good, &|_| None).unwrap();
        assert_eq!(cfg.providers.len(), 2);
        assert_eq!(cfg.routes.len(), 1);
        let bad = Layer {
            providers: vec![entry(json!({"name": "file", "kind": "opnai"}))],
            routes: vec![entry(
                json!({"model": "r", "targets": [{"model": "nowhere/m"}]}),
            )],
        };
        let issues: Vec<String> = merge(&base, &bad, &|_| None)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(
            issues.iter().any(|i| i.starts_with("providers[1].kind")),
            "{issues:?}"
        );
        assert!(
            issues
                .iter()
                .any(|i| i.starts_with("routes[0].targets[0].model")),
            "{issues:?}"
        );
    }

    #[test]
    fn diffs_name_each_changed_field() {
        let a = Layer {
            providers: vec![entry(
                json!({"name": "p", "kind": "openai", "base_url": "http://a"}),
            )],
            routes: vec![entry(json!({"model": "r", "targets": []}))],
        };
        let b = Layer {
            providers: vec![entry(
                json!({"name": "p", "kind": "openai", "base_url": "http://b"}),
            )],
            routes: vec![],
        };
        let d = diff(&a, &b);
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!(d[0].0, "providers.p.base_url");
        assert_eq!(d[1].0, "routes.r");
        assert!(d[1].2.is_none());
    }
}
