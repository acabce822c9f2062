//! Byte quantities written the Kubernetes way (`10Gi`, `1500M`, `1024`).

use std::borrow::Cow;
use std::fmt;
use std::sync::LazyLock;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The suffixes a byte quantity may carry and the bytes each stands for. Signs, exponents
/// and milli-units are refused because they make no sense for bytes.
pub const SUFFIXES: [(&str, u64); 13] = [
    ("", 1),
    ("k", 1_000),
    ("M", 1_000_000),
    ("G", 1_000_000_000),
    ("T", 1_000_000_000_000),
    ("P", 1_000_000_000_000_000),
    ("E", 1_000_000_000_000_000_000),
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
    ("Pi", 1 << 50),
    ("Ei", 1 << 60),
];

/// Digits allowed after the decimal point. Kubernetes keeps a quantity exact only to
/// nano-units and rounds finer ones up, so with at most nine the API server compares the
/// same value Ferry computes.
pub const MAX_FRACTION_DIGITS: usize = 9;

/// The smallest quantity refused as too large: 2^64 bytes, one more than a `u64` holds.
/// The CRD's CEL rule compares against exactly this text.
pub const LIMIT: &str = "16Ei";

/// The pattern a byte quantity string must match: per suffix, a decimal with at most as
/// many whole digits as the largest count below [`LIMIT`] has, and at most
/// [`MAX_FRACTION_DIGITS`] fraction digits. It keeps every admitted number small enough
/// that the CEL rules' arithmetic (in the API server and in kube's interpreter) is exact;
/// the exact bound is the CEL rule [`crate::rules::byte_quantity_limit`].
pub static QUANTITY_PATTERN: LazyLock<String> = LazyLock::new(|| {
    let fraction = MAX_FRACTION_DIGITS;
    let alternatives: Vec<String> = SUFFIXES
        .iter()
        .map(|(suffix, multiplier)| {
            let whole = (u64::MAX / multiplier).to_string().len();
            format!(r"([0-9]{{1,{whole}}}(\.[0-9]{{0,{fraction}}})?|\.[0-9]{{1,{fraction}}}){suffix}")
        })
        .collect();
    format!("^({})$", alternatives.join("|"))
});

/// The largest quantity written as a JSON integer rather than a string: 2^53 - 1, the last
/// integer every JSON reader (the API server's float path included) holds exactly. Larger
/// counts are written with a suffix, such as `10Pi`.
pub const MAX_INTEGER: u64 = (1 << 53) - 1;

/// The longest string [`QUANTITY_PATTERN`] admits (so the CEL cost estimate stays small).
pub const MAX_LENGTH: usize = 20 + 1 + MAX_FRACTION_DIGITS;

/// A non-negative number of bytes as a Kubernetes quantity, kept as the user wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ByteQuantity {
    text: String,
    bytes: u64,
}

/// Why a quantity string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{0:?} is not a byte quantity below {limit}; write a whole number of bytes or a number with a suffix such as 512Ki, 100Mi or 10Gi, with at most nine digits after the point",
    limit = LIMIT
)]
pub struct QuantityError(pub String);

impl ByteQuantity {
    /// Parses `text` (for example `10Gi`) into a quantity.
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        let bytes = parse_bytes(text).ok_or_else(|| QuantityError(text.to_owned()))?;
        Ok(Self { text: text.to_owned(), bytes })
    }

    /// A quantity of exactly `bytes` bytes.
    pub fn from_bytes(bytes: u64) -> Self {
        Self { text: bytes.to_string(), bytes }
    }

    /// The number of bytes, rounded down to a whole byte.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The quantity as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for ByteQuantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The exact value of `text`, rounded down to a whole byte; `None` when it is not a byte
/// quantity or not below [`LIMIT`].
fn parse_bytes(text: &str) -> Option<u64> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let multiplier = u128::from(SUFFIXES.iter().find(|(known, _)| *known == suffix)?.1);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    if fraction.len() > MAX_FRACTION_DIGITS || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    let mut total = whole.checked_mul(multiplier)?;
    if !fraction.is_empty() {
        // At most nine fraction digits times at most 2^60: far inside u128.
        let scale = 10u128.pow(fraction.len() as u32);
        let fraction: u128 = fraction.parse().ok()?;
        total = total.checked_add(fraction * multiplier / scale)?;
    }
    u64::try_from(total).ok()
}

impl Serialize for ByteQuantity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for ByteQuantity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum IntOrString {
            Int(u64),
            String(String),
        }
        match IntOrString::deserialize(deserializer) {
            Ok(IntOrString::Int(bytes)) => Ok(Self::from_bytes(bytes)),
            Ok(IntOrString::String(text)) => Self::parse(&text).map_err(serde::de::Error::custom),
            Err(_) => Err(serde::de::Error::custom("expected a byte quantity such as 1024, 512Ki, 100Mi or 10Gi")),
        }
    }
}

impl JsonSchema for ByteQuantity {
    fn schema_name() -> Cow<'static, str> {
        "ByteQuantity".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        // Structural schemas allow an int-or-string without a type; the pattern applies
        // to the string form and the minimum to the integer form.
        // The limit rule sits on the type, so no quantity field can be declared without it.
        let limit = serde_json::to_value(crate::rules::byte_quantity_limit()).unwrap_or_default();
        json_schema!({
            "x-kubernetes-int-or-string": true,
            "pattern": QUANTITY_PATTERN.as_str(),
            "maxLength": MAX_LENGTH,
            "minimum": 0,
            "maximum": MAX_INTEGER,
            "x-kubernetes-validations": [limit],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_binary_decimal_and_fractional_quantities() {
        let cases = [
            ("0", 0),
            ("1024", 1024),
            ("1Ki", 1024),
            ("10Gi", 10 << 30),
            ("1.5Mi", 1_572_864),
            ("1.5Gi", 1_610_612_736),
            ("1500M", 1_500_000_000),
            ("2k", 2000),
            (".5Ki", 512),
            ("1.", 1),
            ("1.9", 1),
            ("0.999999999Ki", 1023),
            ("18446744073709551615", u64::MAX),
            ("18446744073709551615.999999999", u64::MAX),
            ("15Ei", 15 << 60),
            ("15.999999999Ei", 18_446_744_072_556_630_111),
            ("17179869183Gi", 17_179_869_183 << 30),
            ("18.446744073E", 18_446_744_073_000_000_000),
        ];
        for (text, bytes) in cases {
            assert_eq!(ByteQuantity::parse(text).map(|q| q.bytes()), Ok(bytes), "{text}");
        }
    }

    #[test]
    fn refuses_signs_units_overflow_and_long_fractions() {
        for text in [
            "",
            "-1",
            "+1",
            "1m",
            "1e3",
            "Gi",
            "1.2.3",
            "1 Gi",
            "99999Ei",
            ".",
            "16Ei",
            "17179869184Gi",
            "18446744073709551616",
            "18.446744073709551616E",
            "1.0000000001",
            "1.5GB",
        ] {
            assert!(ByteQuantity::parse(text).is_err(), "{text} should be refused");
        }
    }

    #[test]
    fn accepts_integers_and_strings_from_yaml() {
        let from_int: ByteQuantity = serde_yaml::from_str("4096").unwrap();
        let from_text: ByteQuantity = serde_yaml::from_str("4Ki").unwrap();
        assert_eq!(from_int.bytes(), from_text.bytes());
        assert!(serde_yaml::from_str::<ByteQuantity>("-4").is_err());
        assert_eq!(serde_yaml::from_str::<ByteQuantity>("18446744073709551615").unwrap().bytes(), u64::MAX);
        assert!(serde_yaml::from_str::<ByteQuantity>("18446744073709551616").is_err());
    }

    /// Everything the pattern admits below the limit, Rust parses; everything Rust parses
    /// in the pattern's digit ranges, the pattern admits.
    #[test]
    fn the_pattern_and_the_parser_agree() {
        let pattern = jsonschema::validator_for(&serde_json::json!({"pattern": QUANTITY_PATTERN.as_str()})).unwrap();
        let admitted = |text: &str| pattern.is_valid(&serde_json::json!(text));
        for text in ["0", "1Ki", "1.5Mi", "10Gi", ".5k", "1.", "0.123456789", "18446744073709551615", "15.999999999Ei"]
        {
            assert!(admitted(text), "{text}");
            assert!(ByteQuantity::parse(text).is_ok(), "{text}");
        }
        for text in ["-1", "1m", "1e3", "Gi", "1 Gi", "1.0000000001", "100Ei", "123456789012345678901", "5GB"] {
            assert!(!admitted(text), "{text}");
            assert!(ByteQuantity::parse(text).is_err(), "{text}");
        }
        // At the limit the pattern still admits (its digit counts are coarse); the CEL rule
        // `byte_quantity_limit` refuses these, and so does Rust.
        for text in ["16Ei", "17179869184Gi", "18446744073709551616", "99Ei"] {
            assert!(admitted(text), "{text}");
            assert!(ByteQuantity::parse(text).is_err(), "{text}");
        }
        for (suffix, multiplier) in SUFFIXES {
            let largest = u64::MAX / multiplier;
            assert!(ByteQuantity::parse(&format!("{largest}{suffix}")).is_ok(), "{largest}{suffix}");
            assert!(ByteQuantity::parse(&format!("{}{suffix}", u128::from(largest) + 1)).is_err());
            let longest = format!("{}.{}{suffix}", "9".repeat(largest.to_string().len()), "9".repeat(9));
            assert!(admitted(&longest) && longest.len() <= MAX_LENGTH, "{longest}");
        }
    }
}
