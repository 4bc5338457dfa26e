//! Weight formats with their honest storage cost.
//!
//! A "4-bit" format is never 4 bits: block formats carry a scale (and sometimes a
//! minimum) per block. The bits per weight below are the storage of one block divided
//! by its weights, from the block layouts of each format.

use serde::Serialize;

use crate::error::{did_you_mean, PlanError};

/// How scales are attached.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "size")]
pub enum Grouping {
    /// Fixed cost per weight already included in `bits_per_weight` (block formats, floats).
    Block,
    /// One fp16 scale per group of `size` weights.
    Group(u32),
    /// One fp16 scale per output channel: the cost depends on the row width, taken as
    /// the model's hidden size.
    PerChannel,
}

/// A weight storage format.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WeightFormat {
    /// Canonical name (`q4_0`, `int4`, `int4-g128`, `bf16`, `4bit`).
    pub name: String,
    /// Bits of the quantized value alone.
    pub value_bits: f64,
    pub grouping: Grouping,
    /// One-line description of the layout behind the number.
    pub description: String,
}

/// (name, bits per weight including scales, description)
const NAMED: &[(&str, f64, &str)] = &[
    ("f32", 32.0, "IEEE float32"),
    ("f16", 16.0, "IEEE float16"),
    ("bf16", 16.0, "bfloat16"),
    ("q8_0", 8.5, "GGUF Q8_0: 32 x int8 + fp16 scale per block = 34 B / 32"),
    ("q6_k", 6.5625, "GGUF Q6_K: 256-weight super-block, 210 B"),
    ("q5_k", 5.5, "GGUF Q5_K: 256-weight super-block, 176 B"),
    ("q5_1", 6.0, "GGUF Q5_1: 32 weights, fp16 scale + min + 4 B high bits = 24 B"),
    ("q5_0", 5.5, "GGUF Q5_0: 32 weights, fp16 scale + 4 B high bits = 22 B"),
    ("q4_k", 4.5, "GGUF Q4_K: 256-weight super-block, 144 B"),
    ("q4_1", 5.0, "GGUF Q4_1: 32 x 4 bit + fp16 scale + fp16 min = 20 B / 32"),
    ("q4_0", 4.5, "GGUF Q4_0: 32 x 4 bit + fp16 scale = 18 B / 32"),
    ("q3_k", 3.4375, "GGUF Q3_K: 256-weight super-block, 110 B"),
    ("q2_k", 2.625, "GGUF Q2_K: 256-weight super-block, 84 B"),
    (
        "nf4",
        4.127,
        "bitsandbytes NF4 with double quantization: 4 bit + 8-bit absmax per 64 + fp32 per 256 blocks",
    ),
];

impl WeightFormat {
    /// Bits per stored weight including scales. `row_width` prices per-channel scales
    /// (one fp16 per output row of `row_width` inputs).
    pub fn bits_per_weight(&self, row_width: u64) -> f64 {
        match self.grouping {
            Grouping::Block => self.value_bits,
            Grouping::Group(g) => self.value_bits + 16.0 / g as f64,
            Grouping::PerChannel => self.value_bits + 16.0 / row_width.max(1) as f64,
        }
    }

    /// Bytes for `params` weights (rounded up to a whole byte).
    pub fn bytes(&self, params: u64, row_width: u64) -> u64 {
        (params as f64 * self.bits_per_weight(row_width) / 8.0).ceil() as u64
    }

    /// Plain `bits` per weight with no scale overhead: what plain quant bits meant in the
    /// Python tool. Fractional values are allowed (an average over a mixed export).
    pub fn plain_bits(bits: f64) -> Result<Self, PlanError> {
        if !(bits.is_finite() && bits > 0.0 && bits <= 32.0) {
            return Err(PlanError::option(
                "quant bits",
                format!("must be in (0, 32], got {bits}"),
            ));
        }
        Ok(WeightFormat {
            name: format!("{}bit", fmt_bits(bits)),
            value_bits: bits,
            grouping: Grouping::Block,
            description: format!(
                "{} bits per weight, scale overhead not counted",
                fmt_bits(bits)
            ),
        })
    }

    /// Parse a format name: a named format (`q4_0`, `nf4`, `bf16`, ...), `intN`
    /// (per-channel fp16 scales, N in 2..=8), `intN-gG` (fp16 scale per G weights) or
    /// `Nbit` (plain bits).
    pub fn parse(name: &str) -> Result<Self, PlanError> {
        let n = name.trim().to_ascii_lowercase();
        if let Some((canon, bits, desc)) = NAMED.iter().find(|(k, _, _)| *k == n) {
            return Ok(WeightFormat {
                name: canon.to_string(),
                value_bits: *bits,
                grouping: Grouping::Block,
                description: desc.to_string(),
            });
        }
        if let Some(rest) = n.strip_prefix("int") {
            let (b, g) = match rest.split_once("-g") {
                Some((b, g)) => (b, Some(g)),
                None => (rest, None),
            };
            if let Ok(bits) = b.parse::<u32>() {
                if !(2..=8).contains(&bits) {
                    return Err(PlanError::option(
                        "weight format",
                        format!("`{name}`: integer formats take 2..=8 bits"),
                    ));
                }
                return match g {
                    None => Ok(WeightFormat {
                        name: format!("int{bits}"),
                        value_bits: bits as f64,
                        grouping: Grouping::PerChannel,
                        description: format!(
                            "int{bits} with one fp16 scale per output channel (LiteRT / TFLite style)"
                        ),
                    }),
                    Some(g) => match g.parse::<u32>() {
                        Ok(gs) if (1..=1 << 20).contains(&gs) => Ok(WeightFormat {
                            name: format!("int{bits}-g{gs}"),
                            value_bits: bits as f64,
                            grouping: Grouping::Group(gs),
                            description: format!("int{bits} with one fp16 scale per {gs} weights"),
                        }),
                        _ => Err(PlanError::option(
                            "weight format",
                            format!("`{name}`: group size must be an integer in 1..=1048576"),
                        )),
                    },
                };
            }
        }
        if let Some(b) = n.strip_suffix("bit") {
            if let Ok(bits) = b.parse::<f64>() {
                return Self::plain_bits(bits);
            }
        }
        let mut known: Vec<&str> = NAMED.iter().map(|(k, _, _)| *k).collect();
        known.extend(["int8", "int4", "int4-g128", "4bit"]);
        Err(PlanError::UnknownFormat {
            name: name.to_string(),
            hint: did_you_mean(&n, &known),
        })
    }

    /// Every named format plus the common integer variants, for listings.
    pub fn catalog() -> Vec<WeightFormat> {
        let mut v: Vec<WeightFormat> = NAMED
            .iter()
            .filter_map(|(k, _, _)| Self::parse(k).ok())
            .collect();
        for n in ["int8", "int4", "int8-g128", "int4-g128", "int4-g32"] {
            if let Ok(f) = Self::parse(n) {
                v.push(f);
            }
        }
        v
    }
}

/// `4`, `3.5`, `4.125` without trailing zeros.
pub(crate) fn fmt_bits(b: f64) -> String {
    let s = format!("{b:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_formats_count_their_scales() {
        assert_eq!(WeightFormat::parse("q4_0").unwrap().bits_per_weight(0), 4.5);
        assert_eq!(WeightFormat::parse("Q8_0").unwrap().bits_per_weight(0), 8.5);
        assert_eq!(
            WeightFormat::parse("q6_k").unwrap().bits_per_weight(0),
            210.0 * 8.0 / 256.0
        );
        assert_eq!(
            WeightFormat::parse("q2_k").unwrap().bits_per_weight(0),
            84.0 * 8.0 / 256.0
        );
        assert_eq!(
            WeightFormat::parse("q3_k").unwrap().bits_per_weight(0),
            110.0 * 8.0 / 256.0
        );
        assert_eq!(
            WeightFormat::parse("q5_k").unwrap().bits_per_weight(0),
            176.0 * 8.0 / 256.0
        );
        assert_eq!(
            WeightFormat::parse("q4_k").unwrap().bits_per_weight(0),
            144.0 * 8.0 / 256.0
        );
        // NF4 + double quant: 4 + 8/64 + 32/(64*256).
        let nf4 = WeightFormat::parse("nf4").unwrap().bits_per_weight(0);
        assert!((nf4 - (4.0 + 8.0 / 64.0 + 32.0 / 16384.0)).abs() < 1e-3);
    }

    #[test]
    fn integer_formats() {
        let g = WeightFormat::parse("int4-g128").unwrap();
        assert_eq!(g.bits_per_weight(0), 4.125);
        let pc = WeightFormat::parse("int4").unwrap();
        assert_eq!(pc.bits_per_weight(2048), 4.0 + 16.0 / 2048.0);
        assert!(WeightFormat::parse("int9").is_err());
        assert!(WeightFormat::parse("int4-g0").is_err());
        assert_eq!(
            WeightFormat::parse("3.5bit").unwrap().bits_per_weight(0),
            3.5
        );
    }

    #[test]
    fn unknown_format_suggests() {
        let e = WeightFormat::parse("q4_o").unwrap_err().to_string();
        assert!(e.contains("q4_0"), "{e}");
    }

    #[test]
    fn plain_bits_range() {
        assert!(WeightFormat::plain_bits(0.0).is_err());
        assert!(WeightFormat::plain_bits(-4.0).is_err());
        assert!(WeightFormat::plain_bits(f64::NAN).is_err());
        assert_eq!(WeightFormat::plain_bits(4.0).unwrap().name, "4bit");
    }
}
