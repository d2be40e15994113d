//! Estimated list prices (USD per million tokens) for common models, used to report what the
//! cache saved. Matching is by the longest table name contained in the served model name, so
//! dated and provider-prefixed names ("openai/gpt-4o-mini-2024-07-18") find their family.
//! Unknown models count as zero: the figure is an estimate, never a bill.

/// (name fragment, input USD / 1M tokens, output USD / 1M tokens).
const PRICES: &[(&str, f64, f64)] = &[
    ("gpt-4o-mini", 0.15, 0.60),
    ("gpt-4o", 2.50, 10.00),
    ("gpt-4.1-nano", 0.10, 0.40),
    ("gpt-4.1-mini", 0.40, 1.60),
    ("gpt-4.1", 2.00, 8.00),
    ("gpt-5-nano", 0.05, 0.40),
    ("gpt-5-mini", 0.25, 2.00),
    ("gpt-5", 1.25, 10.00),
    ("o3-mini", 1.10, 4.40),
    ("o4-mini", 1.10, 4.40),
    ("o3", 2.00, 8.00),
    ("gpt-3.5-turbo", 0.50, 1.50),
    ("claude-3-5-haiku", 0.80, 4.00),
    ("claude-haiku-4", 1.00, 5.00),
    ("claude-3-5-sonnet", 3.00, 15.00),
    ("claude-3-7-sonnet", 3.00, 15.00),
    ("claude-sonnet-4", 3.00, 15.00),
    ("claude-opus-4", 15.00, 75.00),
    ("gemini-2.5-flash", 0.30, 2.50),
    ("gemini-2.5-pro", 1.25, 10.00),
    ("gemini-2.0-flash", 0.10, 0.40),
    ("llama-3.3-70b", 0.59, 0.79),
    ("llama-3.1-8b", 0.05, 0.08),
    ("mistral-large", 2.00, 6.00),
    ("mistral-small", 0.10, 0.30),
    ("deepseek-chat", 0.27, 1.10),
    ("deepseek-reasoner", 0.55, 2.19),
    ("grok-3", 3.00, 15.00),
    ("command-r-plus", 2.50, 10.00),
    ("command-r", 0.15, 0.60),
];

/// Estimated cost in USD of `input` + `output` tokens on `model` (0 when unknown).
pub fn estimate(model: &str, input: u64, output: u64) -> f64 {
    let m = model.to_ascii_lowercase();
    let best = PRICES
        .iter()
        .filter(|(name, _, _)| m.contains(name))
        .max_by_key(|(name, _, _)| name.len());
    match best {
        Some((_, i, o)) => (input as f64 * i + output as f64 * o) / 1_000_000.0,
        None => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::estimate;

    #[test]
    fn longest_fragment_wins() {
        assert!((estimate("openai/gpt-4o-mini-2024-07-18", 1_000_000, 0) - 0.15).abs() < 1e-9);
        assert!((estimate("gpt-4o", 0, 1_000_000) - 10.0).abs() < 1e-9);
        assert_eq!(estimate("my-local-model", 1000, 1000), 0.0);
    }
}
