//! A cheap nesting check run before a YAML profile reaches the parser: a document
//! nested 100,000 levels deep (`[[[[…` or `- - - …`, a few hundred KB) otherwise takes
//! the parser tens of seconds. Profiles are flat mappings with short lists, so a small
//! limit costs nothing.

/// Deepest nesting a YAML profile may have (block levels + flow brackets).
pub const MAX_YAML_DEPTH: usize = 64;

/// `Err(reason)` when `text` nests deeper than [`MAX_YAML_DEPTH`], with the line.
/// Block nesting counts indentation levels and leading `- ` / `? ` indicators; flow
/// nesting counts `[` and `{` outside quotes and comments. It over-counts rather than
/// under-counts (brackets in block scalars are counted too), which only matters past
/// the limit.
pub fn check_yaml_depth(text: &str) -> Result<(), String> {
    let mut block: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    for (no, line) in text.lines().enumerate() {
        let trimmed = line.trim_start_matches(' ');
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let mut rest = trimmed;
        if flow == 0 {
            let mut col = line.len() - trimmed.len();
            while block.last().is_some_and(|&c| c >= col) {
                block.pop();
            }
            block.push(col);
            while let Some(r) = rest.strip_prefix("- ").or_else(|| rest.strip_prefix("? ")) {
                let after = r.trim_start_matches(' ');
                col += rest.len() - after.len();
                rest = after;
                block.push(col);
                if block.len() > MAX_YAML_DEPTH {
                    break;
                }
            }
        }
        let (mut quote, mut prev) = (None, ' ');
        for ch in rest.chars() {
            match (quote, ch) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '\'' | '"') => quote = Some(ch),
                (None, '#') if prev == ' ' || prev == '\t' => break,
                (None, '[' | '{') => flow += 1,
                (None, ']' | '}') => flow = flow.saturating_sub(1),
                _ => {}
            }
            prev = ch;
            if block.len() + flow > MAX_YAML_DEPTH {
                break;
            }
        }
        if block.len() + flow > MAX_YAML_DEPTH {
            return Err(format!(
                "nested more than {MAX_YAML_DEPTH} levels deep (line {}); a profile is a flat mapping",
                no + 1
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_profiles_pass() {
        let y = "name: x\nlayer_types: [sliding, full]\nnested:\n  a:\n    - b: [1, {c: 2}]\n    - '[[[[' # [[[[\n";
        check_yaml_depth(y).unwrap();
        let mut ok = String::new();
        for i in 0..40 {
            ok.push_str(&" ".repeat(i));
            ok.push_str("k:\n");
        }
        check_yaml_depth(&ok).unwrap();
    }

    #[test]
    fn deep_documents_are_refused_fast() {
        let t = std::time::Instant::now();
        let n = 100_000;
        let flow = format!("name: {}{}\n", "[".repeat(n), "]".repeat(n));
        assert!(check_yaml_depth(&flow).unwrap_err().contains("line 1"));
        let dashes = format!("{}x\n", "- ".repeat(n));
        assert!(check_yaml_depth(&dashes).is_err());
        let mut indented = String::new();
        for i in 0..100 {
            indented.push_str(&" ".repeat(i));
            indented.push_str("k:\n");
        }
        assert!(check_yaml_depth(&indented).unwrap_err().contains("line 65"));
        assert!(t.elapsed().as_millis() < 500);
    }
}
