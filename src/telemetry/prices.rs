//! Estimated prices (USD per million tokens): the built-in table in `prices.toml`, with the
//! config's `[prices]` laid over it. Matching is by the longest table name contained in the
//! served model name, so dated and provider-prefixed names ("openai/gpt-4o-mini-2024-07-18")
//! find their family. Unknown models count as zero: the figure is an estimate, never a bill.

use std::collections::BTreeMap;

use foldhash::HashMap;
use std::sync::{Arc, RwLock};

use crate::config::Price;

/// Model names whose price is remembered. Names come from clients and upstreams, so the memo is
/// bounded: past it, a name is matched against the table each time, as before there was one.
const MEMO_CAPACITY: usize = 512;

/// The built-in table, compiled in.
const BUILT_IN: &str = include_str!("prices.toml");

/// A price table.
#[derive(Debug, Clone)]
pub struct Prices {
    /// (lower-case name fragment, price), longest fragment first.
    table: Vec<(String, Price)>,
    /// Each model name's match, found once: a request asks up to three times (admission, the
    /// request log, the settled spend) and the table scan was most of that cost.
    memo: Arc<RwLock<HashMap<Box<str>, Option<Price>>>>,
}

impl Default for Prices {
    fn default() -> Self {
        Self::new(&BTreeMap::new())
    }
}

impl Prices {
    /// The built-in table with `overrides` (from `[prices]`) laid over it.
    pub fn new(overrides: &BTreeMap<String, Price>) -> Self {
        // The built-in file is checked by a unit test; a broken one would only lose estimates.
        let mut merged: BTreeMap<String, Price> = toml::from_str(BUILT_IN).unwrap_or_default();
        for (k, v) in overrides {
            merged.insert(k.to_ascii_lowercase(), *v);
        }
        let mut table: Vec<(String, Price)> = merged.into_iter().collect();
        table.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        Self {
            table,
            memo: Arc::default(),
        }
    }

    /// The price that applies to `model`, if any.
    pub fn price(&self, model: &str) -> Option<Price> {
        if let Ok(memo) = self.memo.read()
            && let Some(p) = memo.get(model)
        {
            return *p;
        }
        let found = self.scan(model);
        if let Ok(mut memo) = self.memo.write()
            && memo.len() < MEMO_CAPACITY
        {
            memo.insert(model.into(), found);
        }
        found
    }

    /// The table's match for `model`: the longest fragment it contains.
    fn scan(&self, model: &str) -> Option<Price> {
        let m = model.to_ascii_lowercase();
        self.table
            .iter()
            .find(|(name, _)| m.contains(name.as_str()))
            .map(|(_, p)| *p)
    }

    /// Estimated cost in USD of `input` + `output` tokens on `model` (0 when unknown).
    pub fn estimate(&self, model: &str, input: u64, output: u64) -> f64 {
        self.price(model).map_or(0.0, |p| usd(p, input, output))
    }
}

/// Cost in USD of `input` + `output` tokens at price `p`.
pub fn usd(p: Price, input: u64, output: u64) -> f64 {
    (input as f64 * p.input + output as f64 * p.output) / 1_000_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_table_parses() {
        let parsed: BTreeMap<String, Price> = toml::from_str(BUILT_IN).unwrap_or_default();
        assert!(parsed.len() >= 30, "{} entries", parsed.len());
    }

    #[test]
    fn remembered_prices_are_the_tables_and_the_memo_is_bounded() {
        let p = Prices::default();
        for _ in 0..2 {
            // Asked twice: the second answer comes from the memo and must be the same.
            assert!(
                (p.estimate("openai/gpt-4o-mini-2024-07-18", 1_000_000, 0) - 0.15).abs() < 1e-9
            );
            assert!((p.estimate("GPT-4O", 0, 1_000_000) - 10.0).abs() < 1e-9);
            assert_eq!(p.price("my-local-model"), None);
        }
        for i in 0..(MEMO_CAPACITY + 100) {
            let m = format!("gpt-4o-mini-{i}");
            assert!((p.estimate(&m, 1_000_000, 0) - 0.15).abs() < 1e-9, "{m}");
        }
        assert_eq!(p.memo.read().map(|m| m.len()).unwrap_or(0), MEMO_CAPACITY);
        // Past the bound a name is still priced.
        assert!((p.estimate("claude-3-haiku-later", 1_000_000, 0) - 0.25).abs() < 1e-9);
    }

    #[test]
    fn longest_fragment_wins() {
        let p = Prices::default();
        assert!((p.estimate("openai/gpt-4o-mini-2024-07-18", 1_000_000, 0) - 0.15).abs() < 1e-9);
        assert!((p.estimate("gpt-4o", 0, 1_000_000) - 10.0).abs() < 1e-9);
        assert_eq!(p.estimate("my-local-model", 1000, 1000), 0.0);
        // Bedrock and Gemini ids find their families.
        let per_m = |m: &str| p.estimate(m, 1_000_000, 0);
        assert!((per_m("anthropic.claude-3-haiku-20240307-v1:0") - 0.25).abs() < 1e-9);
        assert!((per_m("us.amazon.nova-lite-v1:0") - 0.06).abs() < 1e-9);
        assert!((per_m("gemini-2.5-flash-lite-preview-06-17") - 0.10).abs() < 1e-9);
        assert!((per_m("gemini-2.5-flash") - 0.30).abs() < 1e-9);
    }

    #[test]
    fn config_overrides_and_adds() {
        let mut o = BTreeMap::new();
        o.insert(
            "GPT-4o".to_string(),
            Price {
                input: 1.0,
                output: 2.0,
            },
        );
        o.insert(
            "my-local-model".to_string(),
            Price {
                input: 0.5,
                output: 0.5,
            },
        );
        let p = Prices::new(&o);
        assert!((p.estimate("gpt-4o-2024", 1_000_000, 1_000_000) - 3.0).abs() < 1e-9);
        assert!((p.estimate("gpt-4o-mini", 1_000_000, 0) - 0.15).abs() < 1e-9);
        assert!((p.estimate("ollama/my-local-model", 2_000_000, 0) - 1.0).abs() < 1e-9);
    }
}
