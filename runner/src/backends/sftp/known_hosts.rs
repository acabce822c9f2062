//! Which host keys a binding's `knownHosts` trusts for one host and port, with OpenSSH's
//! matching rules: `host` for port 22 and `[host]:port` otherwise, comma-separated patterns
//! with `*` and `?`, negations with `!`, hashed names (`|1|salt|hash`) and `@revoked` keys.
//! There is no trust on first use: a host with no entry is refused.

use hmac::{Hmac, KeyInit, Mac};
use russh::keys::PublicKey;
use russh::keys::ssh_key::known_hosts::{Entry, HostPatterns, Marker};

/// The keys `knownHosts` accepts, and refuses outright, for one host.
#[derive(Debug, Clone)]
pub struct TrustedKeys {
    accepted: Vec<PublicKey>,
    revoked: Vec<PublicKey>,
}

impl TrustedKeys {
    /// Whether a server offering `key` is the server the binding means.
    pub fn trusts(&self, key: &PublicKey) -> bool {
        let same = |known: &PublicKey| known.key_data() == key.key_data();
        !self.revoked.iter().any(same) && self.accepted.iter().any(same)
    }
}

/// The name OpenSSH looks a host up by.
pub fn lookup_name(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if port == 22 { host } else { format!("[{host}]:{port}") }
}

/// Reads `known_hosts` (the binding's field) for `host`:`port`; an error says which line
/// cannot be read, or that no line names the host.
pub fn trusted_keys(known_hosts: &str, host: &str, port: u16) -> Result<TrustedKeys, String> {
    let name = lookup_name(host, port);
    let mut trusted = TrustedKeys { accepted: Vec::new(), revoked: Vec::new() };
    for (number, line) in known_hosts.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let entry: Entry = line.parse().map_err(|error| {
            format!(
                "spec.sftp.knownHosts line {} is not a known_hosts entry ({error}); paste what `ssh-keyscan` prints",
                number + 1
            )
        })?;
        if !matches_host(entry.host_patterns(), &name) {
            continue;
        }
        match entry.marker() {
            Some(Marker::Revoked) => trusted.revoked.push(entry.public_key().clone()),
            // Host certificates are not accepted: only keys listed by value are trusted.
            Some(Marker::CertAuthority) => {}
            None => trusted.accepted.push(entry.public_key().clone()),
        }
    }
    if trusted.accepted.is_empty() {
        return Err(format!(
            "spec.sftp.knownHosts lists no key for {name}; add the line `ssh-keyscan{} {host}` prints, after checking \
             its fingerprint with the server's administrator",
            if port == 22 { String::new() } else { format!(" -p {port}") }
        ));
    }
    Ok(trusted)
}

fn matches_host(patterns: &HostPatterns, name: &str) -> bool {
    match patterns {
        HostPatterns::HashedName { salt, hash } => Hmac::<sha1::Sha1>::new_from_slice(salt)
            .map(|mac| mac.chain_update(name.as_bytes()).verify_slice(hash).is_ok())
            .unwrap_or(false),
        HostPatterns::Patterns(patterns) => {
            let mut matched = false;
            for pattern in patterns {
                let pattern = pattern.to_ascii_lowercase();
                match pattern.strip_prefix('!') {
                    // A negated match rules the line out, whatever else matches.
                    Some(negated) if wildcard_match(negated, name) => return false,
                    Some(_) => {}
                    None => matched |= wildcard_match(&pattern, name),
                }
            }
            matched
        }
    }
}

/// OpenSSH's pattern rule: `*` is any run of characters, `?` any one, all else literal.
fn wildcard_match(pattern: &str, name: &str) -> bool {
    let (pattern, name): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Classic two-pointer glob with backtracking to the last `*`.
    let (mut p, mut n, mut star, mut resume) = (0, 0, None, 0);
    while n < name.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some(p);
            p += 1;
            resume = n;
        } else if let Some(star) = star {
            p = star + 1;
            resume += 1;
            n = resume;
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPhBjLm4OzI1jupaW6wdAwhMUwIer6ucY9zHZeADKaBJ";
    const OTHER: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIClqPqAhWfKMqdQuwtabe3bBrN8Pf06FW1ccv7HfmXux";

    fn key(line: &str) -> PublicKey {
        PublicKey::from_openssh(line).unwrap()
    }

    #[test]
    fn a_plain_entry_is_trusted_for_its_host_and_port_only() {
        let trusted = trusted_keys(&format!("sftp.example.com {ED25519}"), "sftp.example.com", 22).unwrap();
        assert!(trusted.trusts(&key(ED25519)));
        assert!(!trusted.trusts(&key(OTHER)));
        let error = trusted_keys(&format!("sftp.example.com {ED25519}"), "sftp.example.com", 2222).unwrap_err();
        assert!(error.contains("[sftp.example.com]:2222") && error.contains("ssh-keyscan -p 2222"), "{error}");
    }

    #[test]
    fn ports_wildcards_and_negations_follow_openssh() {
        let known = format!("[127.0.0.1]:2222 {ED25519}\n*.example.com,!bad.example.com {OTHER}\n");
        assert!(trusted_keys(&known, "127.0.0.1", 2222).unwrap().trusts(&key(ED25519)));
        assert!(trusted_keys(&known, "Files.Example.com", 22).unwrap().trusts(&key(OTHER)));
        assert!(trusted_keys(&known, "bad.example.com", 22).is_err());
        assert!(wildcard_match("f?les*.com", "files-eu.com"));
        assert!(!wildcard_match("f?les*.com", "files-eu.org"));
    }

    #[test]
    fn hashed_names_match_what_ssh_keygen_hashes() {
        // `ssh-keygen -H` of "sftp.example.com": HMAC-SHA1 of the name under a random salt.
        use base64::Engine;
        let salt = [7u8; 20];
        let hash = Hmac::<sha1::Sha1>::new_from_slice(&salt).unwrap().chain_update(b"sftp.example.com").finalize();
        let encode = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        let line = format!("|1|{}|{} {ED25519}", encode(&salt), encode(&hash.into_bytes()));
        assert!(trusted_keys(&line, "sftp.example.com", 22).unwrap().trusts(&key(ED25519)));
        assert!(trusted_keys(&line, "other.example.com", 22).is_err());
    }

    #[test]
    fn a_revoked_key_is_refused_even_when_listed() {
        let known = format!("@revoked * {ED25519}\nsftp.example.com {ED25519}\nsftp.example.com {OTHER}\n");
        let trusted = trusted_keys(&known, "sftp.example.com", 22).unwrap();
        assert!(!trusted.trusts(&key(ED25519)));
        assert!(trusted.trusts(&key(OTHER)));
    }

    #[test]
    fn a_line_that_is_not_an_entry_is_named() {
        let error = trusted_keys(&format!("# comment\nsftp.example.com {ED25519}\nnot a key\n"), "x", 22).unwrap_err();
        assert!(error.contains("line 3"), "{error}");
    }
}
