//! Built-in model profiles.
//!
//! Each profile is a YAML file in `crates/dhurandhar-model/profiles/`, compiled in with
//! `include_str!` and parsed through the same path as a user's own YAML profile, so
//! the built-ins exercise the loader and a user can copy one as a starting point.

use crate::ModelArchitecture;

/// (slug, YAML text), sorted by slug.
const PROFILES: &[(&str, &str)] = &[
    ("gemma3n-e2b", include_str!("../profiles/gemma3n-e2b.yaml")),
    ("gemma4-e2b", include_str!("../profiles/gemma4-e2b.yaml")),
    ("gemma4-e4b", include_str!("../profiles/gemma4-e4b.yaml")),
    (
        "granite-3.3-2b",
        include_str!("../profiles/granite-3.3-2b.yaml"),
    ),
    (
        "llama-3.2-1b",
        include_str!("../profiles/llama-3.2-1b.yaml"),
    ),
    (
        "llama-3.2-3b",
        include_str!("../profiles/llama-3.2-3b.yaml"),
    ),
    (
        "mixtral-8x7b",
        include_str!("../profiles/mixtral-8x7b.yaml"),
    ),
    (
        "phi-3-mini-4k",
        include_str!("../profiles/phi-3-mini-4k.yaml"),
    ),
    (
        "qwen2.5-0.5b",
        include_str!("../profiles/qwen2.5-0.5b.yaml"),
    ),
    (
        "qwen2.5-1.5b",
        include_str!("../profiles/qwen2.5-1.5b.yaml"),
    ),
    ("qwen2.5-3b", include_str!("../profiles/qwen2.5-3b.yaml")),
    (
        "qwen3-30b-a3b",
        include_str!("../profiles/qwen3-30b-a3b.yaml"),
    ),
    ("zaya1-8b", include_str!("../profiles/zaya1-8b.yaml")),
];

/// The built-in profile YAML for `slug` (exact, case-insensitive), e.g. to copy and edit.
pub fn yaml(slug: &str) -> Option<&'static str> {
    PROFILES
        .iter()
        .find(|(s, _)| s.eq_ignore_ascii_case(slug.trim()))
        .map(|(_, y)| *y)
}

/// The built-in model `slug` (case-insensitive), validated.
pub fn get(slug: &str) -> Option<ModelArchitecture> {
    let text = yaml(slug)?;
    // The profiles are compiled in and covered by a test that parses every one, so a
    // failure here is a build defect, not bad user input.
    ModelArchitecture::from_yaml_str(text, slug).ok()
}

/// Every built-in model, sorted by slug.
pub fn all() -> Vec<ModelArchitecture> {
    names().into_iter().filter_map(get).collect()
}

/// Every built-in slug, sorted.
pub fn names() -> Vec<&'static str> {
    PROFILES.iter().map(|(s, _)| *s).collect()
}

/// Built-in slugs close to `name` (for "did you mean"), best first, at most three.
///
/// Uses Jaro-Winkler similarity on lower-cased names plus substring matches, so
/// `gemma4`, `qwen-0.5b` and `llama3.2-1b` all find their targets.
pub fn suggest(name: &str) -> Vec<String> {
    let q = name.trim().to_ascii_lowercase();
    let norm = |s: &str| s.replace(['-', '_', '.'], "");
    let qn = norm(&q);
    let mut scored: Vec<(f64, &str)> = PROFILES
        .iter()
        .map(|(s, _)| {
            let mut score = strsim::jaro_winkler(&q, s);
            let sn = norm(s);
            if !qn.is_empty() && (sn.contains(&qn) || qn.contains(&sn)) {
                score = score.max(0.9);
            }
            (score, *s)
        })
        .filter(|(score, _)| *score >= 0.75)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    scored
        .into_iter()
        .take(3)
        .map(|(_, s)| s.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_profile_parses_and_is_named_after_its_slug() {
        for (slug, text) in PROFILES {
            let m = ModelArchitecture::from_yaml_str(text, slug)
                .unwrap_or_else(|e| panic!("built-in {slug}: {e}"));
            assert_eq!(&m.name, slug);
            assert!(!m.source.is_empty(), "{slug} has no source");
        }
        assert_eq!(all().len(), 13);
        let mut sorted = names();
        sorted.sort();
        assert_eq!(sorted, names());
    }

    #[test]
    fn lookup_is_case_insensitive_and_unknown_is_none() {
        assert_eq!(get("Gemma4-E2B").unwrap().name, "gemma4-e2b");
        assert!(get("gemma5").is_none());
    }

    #[test]
    fn suggestions_find_near_names() {
        assert_eq!(suggest("gemma4-e2")[0], "gemma4-e2b");
        assert!(suggest("qwen2.5-3").contains(&"qwen2.5-3b".to_string()));
        assert!(suggest("llama3.2-1b").contains(&"llama-3.2-1b".to_string()));
        assert!(suggest("zzzzzz").is_empty());
    }

    #[test]
    fn qwen25_3b_has_two_kv_heads() {
        // The Python tool's profile said 8; the public config says 2.
        assert_eq!(get("qwen2.5-3b").unwrap().num_key_value_heads, 2);
    }
}
