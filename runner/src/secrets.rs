//! Credentials in memory: values are zeroized on drop and never printed.

use std::collections::BTreeMap;
use std::fmt;

use zeroize::Zeroizing;

/// The fields of one binding's secret (`accessKeyId`, `secretAccessKey`, ...).
#[derive(Default, Clone)]
pub struct SecretFields {
    fields: BTreeMap<String, Zeroizing<String>>,
}

impl SecretFields {
    /// Adds a field.
    pub fn insert(&mut self, name: impl Into<String>, value: Zeroizing<String>) {
        self.fields.insert(name.into(), value);
    }

    /// A field's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(|value| value.as_str())
    }

    /// The field names (never the values).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.fields.keys().map(String::as_str)
    }
}

impl fmt::Debug for SecretFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names only: a secret must never reach a log line, an error or a panic message.
        f.debug_set().entries(self.names()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_names_not_values() {
        let mut secret = SecretFields::default();
        secret.insert("secretAccessKey", Zeroizing::new("hunter2-very-secret".into()));
        let printed = format!("{secret:?}");
        assert!(printed.contains("secretAccessKey"));
        assert!(!printed.contains("hunter2"));
    }
}
