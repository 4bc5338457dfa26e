//! How sizes are shown to people (binary units everywhere; reports carry integer bytes)
//! and read from them.

const KIB: f64 = 1024.0;
const MIB: f64 = KIB * 1024.0;
const GIB: f64 = MIB * 1024.0;

/// `812.3 MiB`, `2.41 GiB`, `96.0 KiB`, `512 B`.
pub fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= GIB {
        format!("{:.2} GiB", b / GIB)
    } else if b >= MIB {
        format!("{:.1} MiB", b / MIB)
    } else if b >= KIB {
        format!("{:.1} KiB", b / KIB)
    } else {
        format!("{bytes} B")
    }
}

/// A signed size in whole MiB: `+350 MiB`, `-674 MiB`.
pub fn signed_mib(bytes: i64) -> String {
    format!("{:+.0} MiB", bytes as f64 / MIB)
}

/// A byte count with an optional unit: B, K/KB/KiB, M/MB/MiB, G/GB/GiB (KB = 1000,
/// KiB = 1024; a bare K/M/G is binary).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (a number with an optional unit such as MiB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "kb" => 1000,
        "m" | "mib" => 1 << 20,
        "mb" => 1_000_000,
        "g" | "gib" => 1 << 30,
        "gb" => 1_000_000_000,
        "t" | "tib" => 1 << 40,
        "tb" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "`{s}`: unknown size unit `{other}` (B, KiB, MiB, GiB, KB, MB, GB)"
            ))
        }
    };
    let v = n * mult as f64;
    if !v.is_finite() || v < 0.0 || v >= u64::MAX as f64 {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(v.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("48MiB"), Ok(48 << 20));
        assert_eq!(parse_size("48M"), Ok(48 << 20));
        assert_eq!(parse_size("1.5GB"), Ok(1_500_000_000));
        assert_eq!(parse_size("2 KiB"), Ok(2048));
        assert_eq!(parse_size("65536"), Ok(65536));
        assert!(parse_size("48 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("1e30GB").is_err());
    }

    #[test]
    fn picks_the_unit() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(96 * 1024), "96.0 KiB");
        assert_eq!(human_bytes(897 * 1024 * 1024 + 300 * 1024), "897.3 MiB");
        assert_eq!(human_bytes(2_673_000_000), "2.49 GiB");
        assert_eq!(signed_mib(-674 * 1024 * 1024), "-674 MiB");
        assert_eq!(signed_mib(350 * 1024 * 1024), "+350 MiB");
    }
}
