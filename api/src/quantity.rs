//! Byte quantities written the Kubernetes way (`10Gi`, `1500M`, `1024`).

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The pattern a byte quantity string must match: a non-negative decimal and an optional
/// binary (Ki..Ei) or decimal (k..E) suffix. Signs, exponents and milli-units are refused
/// because they make no sense for bytes.
pub const QUANTITY_PATTERN: &str = r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$";

/// A non-negative number of bytes as a Kubernetes quantity, kept as the user wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ByteQuantity {
    text: String,
    bytes: u64,
}

/// Why a quantity string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{0:?} is not a byte quantity; write a whole number of bytes or a number with a suffix such as 512Ki, 100Mi or 10Gi"
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

fn parse_bytes(text: &str) -> Option<u64> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let multiplier: u128 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        _ => return None,
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    if fraction.len() > 18 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    let mut total = whole.checked_mul(multiplier)?;
    if !fraction.is_empty() {
        let scale = 10u128.pow(fraction.len() as u32);
        let fraction: u128 = fraction.parse().ok()?;
        total = total.checked_add(fraction.checked_mul(multiplier)? / scale)?;
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
        json_schema!({
            "x-kubernetes-int-or-string": true,
            "pattern": QUANTITY_PATTERN,
            "minimum": 0,
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
            ("1500M", 1_500_000_000),
            ("2k", 2000),
            (".5Ki", 512),
        ];
        for (text, bytes) in cases {
            assert_eq!(ByteQuantity::parse(text).map(|q| q.bytes()), Ok(bytes), "{text}");
        }
    }

    #[test]
    fn refuses_signs_units_and_overflow() {
        for text in ["", "-1", "+1", "1m", "1e3", "Gi", "1.2.3", "1 Gi", "99999Ei", "."] {
            assert!(ByteQuantity::parse(text).is_err(), "{text} should be refused");
        }
    }

    #[test]
    fn accepts_integers_and_strings_from_yaml() {
        let from_int: ByteQuantity = serde_yaml::from_str("4096").unwrap();
        let from_text: ByteQuantity = serde_yaml::from_str("4Ki").unwrap();
        assert_eq!(from_int.bytes(), from_text.bytes());
        assert!(serde_yaml::from_str::<ByteQuantity>("-4").is_err());
    }

    #[test]
    fn the_pattern_and_the_parser_agree() {
        let pattern = jsonschema::validator_for(&serde_json::json!({"pattern": QUANTITY_PATTERN})).unwrap();
        for text in ["0", "1Ki", "1.5Mi", "10Gi", ".5k", "-1", "1m", "1e3", "Gi", "1 Gi"] {
            let valid = pattern.is_valid(&serde_json::json!(text));
            assert_eq!(valid, ByteQuantity::parse(text).is_ok(), "{text}");
        }
    }
}
