//! How sizes are shown to people: binary units everywhere (reports carry integer bytes).

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

#[cfg(test)]
mod tests {
    use super::*;

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
