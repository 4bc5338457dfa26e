//! The shared table plumbing of `dhurandhar_cli::render`.

use dhurandhar_cli::render::{f, num, table};

#[test]
fn numbers_get_thousands_separators() {
    assert_eq!(num(Some(1234567.891), 1), "1,234,567.9");
    assert_eq!(num(Some(999.0), 0), "999");
    assert_eq!(num(Some(-1000.0), 0), "-1,000");
    assert_eq!(num(Some(0.25), 2), "0.25");
    assert_eq!(num(None, 2), "-");
}

#[test]
fn tiny_values_switch_to_scientific() {
    assert_eq!(f(0.00001, 4), "1.00e-5");
    assert_eq!(f(0.5, 3), "0.500");
    assert_eq!(f(0.0, 3), "0.000");
}

#[test]
fn headers_stay_left_while_number_columns_go_right() {
    let mut t = table("name|count", &[1]);
    t.add_row(["a", "5"]);
    let text = t.to_string();
    assert!(text.contains("│ name ┆ count │"), "{text}");
    assert!(text.contains("│ a    ┆     5 │"), "{text}");
}
