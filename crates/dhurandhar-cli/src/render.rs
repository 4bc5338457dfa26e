//! Table plumbing shared by every command: one table style, right-aligned number
//! columns, and the number formats the tables use. Byte sizes come from
//! [`dhurandhar::units`].

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{Cell, CellAlignment, ContentArrangement, Table};

/// A condensed UTF-8 table with the `|`-separated `header`; the columns at the indices
/// in `right` are right-aligned (numbers), headers always stay left-aligned.
pub fn table(header: &str, right: &[usize]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(
        header
            .split('|')
            .map(|h| Cell::new(h).set_alignment(CellAlignment::Left)),
    );
    for &i in right {
        if let Some(column) = t.column_mut(i) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    t
}

/// [`table`] that wraps its text columns to fit 120 characters.
pub fn wide_table(header: &str, right: &[usize]) -> Table {
    let mut t = table(header, right);
    t.set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(120);
    t
}

/// `v` with `digits` decimals; tiny non-zero values in scientific notation so they do
/// not print as zero.
pub fn f(v: f64, digits: usize) -> String {
    if v.is_finite() && v != 0.0 && v.abs() < 10f64.powi(-(digits as i32)) {
        format!("{v:.2e}")
    } else {
        format!("{v:.digits$}")
    }
}

/// A median with its worst case in brackets: `0.0123 [0.0456]`.
pub fn with_worst(median: f64, worst: f64, digits: usize) -> String {
    format!("{} [{}]", f(median, digits), f(worst, digits))
}

/// Bytes as MiB with one decimal, no unit (a column headed MiB).
pub fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}

/// 1234567.8 -> "1,234,567.8"; `None` -> "-".
pub fn num(v: Option<f64>, digits: usize) -> String {
    let Some(x) = v else { return "-".into() };
    let s = format!("{:.*}", digits, x.abs());
    let (int, frac) = s.split_at(s.find('.').unwrap_or(s.len()));
    let mut out = String::from(if x < 0.0 { "-" } else { "" });
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out + frac
}

/// A size that may be unknown on this platform: `812.3 MiB` or `n/a`.
pub fn bytes_or_na(bytes: Option<u64>) -> String {
    bytes
        .map(dhurandhar::units::human_bytes)
        .unwrap_or_else(|| "n/a".into())
}

/// Dimensions joined by `sep`: `2048x768`.
pub fn shape(dims: &[u64], sep: &str) -> String {
    let dims: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    dims.join(sep)
}
