//! Patterns for names, paths and addresses that several resources share.

/// A DNS-1123 subdomain: the form of every Kubernetes object name.
pub const DNS_SUBDOMAIN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// An `http://` or `https://` URL without spaces.
pub const HTTP_URL: &str = r"^https?://[^\s/?#]+([/?#]\S*)?$";

/// An absolute filesystem path, or `./relative` (resolved by the local CLI against the
/// manifest's directory; refused in a cluster).
pub const FILESYSTEM_ROOT: &str = r"^(/|\./)";

/// A Vault mount or secret path: segments start with a letter, digit, `_`, `@` or `-`
/// (so no `.` or `..` segment), no leading `/`, no spaces.
pub const VAULT_PATH: &str = r"^[A-Za-z0-9_@-][A-Za-z0-9_.@-]*(/[A-Za-z0-9_@-][A-Za-z0-9_.@-]*)*$";

/// An IPv4 CIDR (`10.0.0.0/8`) or IPv6 CIDR (`2001:db8::/32`).
pub const CIDR: &str = concat!(
    r"^(((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])/(3[0-2]|[12]?[0-9])",
    r"|[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))$"
);

/// A five-field cron expression or one of the `@daily`-style shorthands.
pub const CRON: &str = concat!(
    r"^(@(yearly|monthly|weekly|daily|hourly)",
    r"|([0-9*,/-]+) +([0-9*,/-]+) +([0-9*,/-]+) +([0-9A-Za-z*,/-]+) +([0-9A-Za-z*,/-]+))$"
);

/// An RFC 3339 time as both the API server's `date-time` format and Rust's `Timestamp`
/// read it: upper-case `T` and `Z`, at most nine fraction digits, real clock ranges, an
/// offset, and a year below 9999 (the API server's check lets any character stand for the
/// decimal point and accepts lower case; `jiff` ends in the last days of 9999).
pub const RFC3339_TIME: &str = concat!(
    r"^([0-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])",
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
);

/// What to write instead when a value does not match one of the patterns above.
pub fn pattern_hint(pattern: &str) -> Option<&'static str> {
    let hints = [
        (DNS_SUBDOMAIN, "use a lowercase DNS-1123 name: letters, digits, '-' and '.'"),
        (HTTP_URL, "write a URL that starts with http:// or https://"),
        (
            FILESYSTEM_ROOT,
            "write an absolute path such as /data (or ./dir, relative to the manifest, when running locally)",
        ),
        (VAULT_PATH, "write a Vault path such as tenants/team-a/app, without a leading '/' or '..'"),
        (CIDR, "write an address block such as 10.0.0.0/8 or 2001:db8::/32"),
        (RFC3339_TIME, "write an RFC 3339 time such as 2024-01-01T00:00:00Z"),
        (CRON, "write five cron fields such as \"0 2 * * *\" or a shorthand such as @daily"),
        (
            crate::quantity::QUANTITY_PATTERN.as_str(),
            "write a byte quantity below 16Ei such as 1024, 512Ki, 100Mi or 10Gi, with at most nine digits after the point",
        ),
    ];
    hints.iter().find(|(known, _)| *known == pattern).map(|(_, hint)| *hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, text: &str) -> bool {
        jsonschema::validator_for(&serde_json::json!({ "pattern": pattern }))
            .map(|v| v.is_valid(&serde_json::json!(text)))
            .unwrap_or(false)
    }

    #[test]
    fn cidrs() {
        for ok in ["10.0.0.0/8", "52.218.0.0/17", "0.0.0.0/0", "2001:db8::/32", "::/0", "192.168.1.1/32"] {
            assert!(matches(CIDR, ok), "{ok}");
        }
        for bad in ["10.0.0.0", "300.0.0.0/8", "10.0.0.0/33", "example.com/8", "2001:db8::/129", ""] {
            assert!(!matches(CIDR, bad), "{bad}");
        }
    }

    #[test]
    fn cron_schedules() {
        for ok in ["0 2 * * *", "*/15 * * * 1-5", "@daily", "0 0 1 JAN *"] {
            assert!(matches(CRON, ok), "{ok}");
        }
        // `L`, `W`, `#` and `?` are not read by the operator's cron parser: refused at admission.
        for bad in ["0 2 * *", "every day", "@sometimes", "0 2 * * * *", "0 0 L * *", "0 0 * * 5#3", "@annually"] {
            assert!(!matches(CRON, bad), "{bad}");
        }
    }

    #[test]
    fn names_and_urls() {
        assert!(matches(DNS_SUBDOMAIN, "legacy-s3.v2"));
        assert!(!matches(DNS_SUBDOMAIN, "Legacy_S3"));
        assert!(matches(HTTP_URL, "https://s3.eu-west-1.amazonaws.com"));
        assert!(matches(HTTP_URL, "http://127.0.0.1:9000/path"));
        assert!(!matches(HTTP_URL, "s3.amazonaws.com"));
        assert!(matches(VAULT_PATH, "tenants/team-a/legacy-s3"));
        assert!(!matches(VAULT_PATH, "/tenants/../x"));
    }

    #[test]
    fn times_the_pattern_admits_are_times_rust_reads() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        for ok in [
            "2024-01-01T00:00:00Z",
            "2024-02-29T23:59:59.123456789+05:30",
            "0000-01-01T00:00:00+23:59",
            "9998-12-31T23:59:59.999999999-23:59",
        ] {
            assert!(matches(RFC3339_TIME, ok), "{ok}");
            assert!(serde_json::from_value::<Time>(serde_json::json!(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00x5Z",
            "2024-01-01t00:00:00z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T23:59:60Z",
            "9999-12-31T00:00:00Z",
            "2024-01-01T00:00:00.1234567890Z",
        ] {
            assert!(!matches(RFC3339_TIME, bad), "{bad}");
        }
    }
}
