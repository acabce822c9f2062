//! Which object keys a destination that is a directory tree (a filesystem, SFTP, WebDAV) can hold, and which of them collide: pure
//! decisions over plain strings, made before a key ever becomes a path.
//!
//! An object store accepts keys a filesystem cannot (`a/../b`, `a//b`, `/x`, names longer
//! than a directory entry). Ferry never "fixes" such a key (collapsing `a//b` into `a/b`
//! would make two keys one file): it refuses it with a reason. The keys it accepts map to
//! relative paths one to one, so the only collision left is a key that needs another key's
//! file as a directory (`x` and `x/y`), which [`Collisions`] finds in a listing in key order.

use crate::storage::PARTIAL_DIRECTORY;

/// Longest name of one directory entry, in bytes (Linux `NAME_MAX`).
pub const NAME_MAX: usize = 255;

/// Longest path Ferry hands the kernel relative to the destination root, in bytes, not
/// counting the terminating NUL (Linux `PATH_MAX` is 4096 with it).
pub const PATH_MAX: usize = 4095;

/// Checks that `key`, under the job's destination path `base` (`""` or `dir/`), can be a
/// file under a filesystem root. `Err` holds the reason, for the per-object report.
pub fn check_key(base: &str, key: &str) -> Result<(), String> {
    let refuse = |what: &str| Err(format!("key {key:?} {what}; a destination that is a directory tree cannot hold it"));
    if key.is_empty() {
        return refuse("is empty");
    }
    if key.contains('\0') {
        return refuse("contains a NUL byte");
    }
    if key.starts_with('/') {
        return refuse("starts with `/`");
    }
    if key.ends_with('/') {
        return refuse("ends with `/` (a directory marker, not a file)");
    }
    for segment in key.split('/') {
        match segment {
            "" => return refuse("has an empty segment (`//`)"),
            "." => return refuse("has a `.` segment"),
            ".." => return refuse("has a `..` segment"),
            long if long.len() > NAME_MAX => {
                return refuse(&format!(
                    "has a segment of {} bytes (at most {NAME_MAX} fit in a directory entry)",
                    long.len()
                ));
            }
            _ => {}
        }
    }
    let length = base.len() + key.len();
    if length > PATH_MAX {
        return refuse(&format!("makes a path of {length} bytes under the destination root (at most {PATH_MAX})"));
    }
    if format!("{base}{key}").starts_with(PARTIAL_DIRECTORY) {
        return refuse(&format!("lies in `{PARTIAL_DIRECTORY}`, where Ferry stages its writes"));
    }
    Ok(())
}

/// Characters OneDrive and SharePoint (like Windows) keep out of names.
const FORBIDDEN_ON_DRIVES: &[char] = &['"', '*', ':', '<', '>', '?', '\\', '|'];

/// Names OneDrive and SharePoint reserve, compared without case and extension.
const RESERVED_ON_DRIVES: &[&str] = &[
    "con", "prn", "aux", "nul", "com0", "com1", "com2", "com3", "com4", "com5", "com6", "com7", "com8", "com9", "lpt0",
    "lpt1", "lpt2", "lpt3", "lpt4", "lpt5", "lpt6", "lpt7", "lpt8", "lpt9",
];

/// The naming rules of a drive that compares names without case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriveNames {
    /// OneDrive's and SharePoint's ([`check_drive_names`]).
    OneDrive,
    /// Dropbox's ([`check_dropbox_names`]).
    Dropbox,
}

impl DriveNames {
    /// `Err` says why `key` cannot be held on the drive.
    pub fn check(self, key: &str) -> Result<(), String> {
        match self {
            Self::OneDrive => check_drive_names(key),
            Self::Dropbox => check_dropbox_names(key),
        }
    }
}

/// Checks each name of `key` against Dropbox's rules (on top of [`check_key`]): no `\`, no
/// DEL, no trailing space, as rclone's Dropbox backend also finds. Nothing is renamed.
pub fn check_dropbox_names(key: &str) -> Result<(), String> {
    for name in key.split('/') {
        let what = if name.contains('\\') {
            "contains '\\'"
        } else if name.contains('\u{7f}') {
            "contains DEL"
        } else if name.ends_with(' ') {
            "ends with a space"
        } else {
            continue;
        };
        return Err(format!("key {key:?} has the name {name:?}, which {what}; Dropbox cannot hold it"));
    }
    Ok(())
}

/// Checks each name of `key` against OneDrive's and SharePoint's rules (on top of
/// [`check_key`]): no `" * : < > ? \ |`, no leading or trailing space, no trailing `.`, no
/// reserved name, no `_vti_`, no `.lock` or `desktop.ini`, no `~$` prefix. Nothing is renamed:
/// `Err` says why the object cannot be held there.
pub fn check_drive_names(key: &str) -> Result<(), String> {
    let refuse = |name: &str, what: &str| {
        Err(format!("key {key:?} has the name {name:?}, which {what}; OneDrive and SharePoint cannot hold it"))
    };
    for name in key.split('/') {
        if let Some(character) = name.chars().find(|c| FORBIDDEN_ON_DRIVES.contains(c) || c.is_control()) {
            return refuse(name, &format!("contains {character:?}"));
        }
        if name.starts_with(' ') || name.ends_with(' ') {
            return refuse(name, "starts or ends with a space");
        }
        if name.ends_with('.') {
            return refuse(name, "ends with `.`");
        }
        let lower = name.to_lowercase();
        let stem = lower.split('.').next().unwrap_or(&lower);
        if RESERVED_ON_DRIVES.contains(&stem) || lower == ".lock" || lower == "desktop.ini" {
            return refuse(name, "is reserved");
        }
        if lower.contains("_vti_") || name.starts_with("~$") {
            return refuse(name, "is reserved (`_vti_`, `~$`)");
        }
    }
    Ok(())
}

/// Keys that name one item where names are compared without case: the first one seen wins
/// the name, each later one fails naming it. Holds a 128-bit digest per key, not the key.
#[derive(Debug, Default)]
pub struct CaseFolded {
    seen: std::collections::HashMap<[u8; 16], String>,
}

impl CaseFolded {
    /// `Err` names the earlier key `key` is the same as, without case.
    pub fn check(&mut self, key: &str) -> Result<(), String> {
        let hash = blake3::hash(key.to_lowercase().as_bytes());
        let mut digest = [0u8; 16];
        digest.copy_from_slice(&hash.as_bytes()[..16]);
        match self.seen.entry(digest) {
            std::collections::hash_map::Entry::Occupied(first) if first.get() != key => Err(format!(
                "key {key:?} is the same as key {:?} where case is ignored, as the destination does; only the first was kept",
                first.get()
            )),
            std::collections::hash_map::Entry::Occupied(_) => Ok(()),
            std::collections::hash_map::Entry::Vacant(slot) => {
                // Only the first key of each name is remembered, for the message.
                slot.insert(key.to_owned());
                Ok(())
            }
        }
    }
}

/// One object [`Collisions`] let go of: the item given with its key, and the collision
/// reason when it must not be written.
#[derive(Debug, PartialEq, Eq)]
pub struct Released<T> {
    /// The key.
    pub key: String,
    /// What the caller attached to the key.
    pub item: T,
    /// Why this key cannot be written, naming the key it collides with.
    pub collision: Option<String>,
}

/// Finds keys that map to the same destination file, in a listing sorted in byte order:
/// a key `x` (a file) and any key `x/...` (which needs `x` as a directory). Both are
/// reported, so neither silently wins.
///
/// A file key is held back until no later key can still need it as a directory. In byte
/// order the keys `x/...` come right after the keys that merely start with `x` (every byte
/// below `/`, such as `-` or `.`, sorts first), so `x` is released as soon as a key arrives
/// that does not start with `x`. The keys held are thus always prefixes of the newest key:
/// memory is bounded by the length of one key, never by the listing.
#[derive(Debug)]
pub struct Collisions<T> {
    held: Vec<Released<T>>,
}

impl<T> Default for Collisions<T> {
    fn default() -> Self {
        Self { held: Vec::new() }
    }
}

impl<T> Collisions<T> {
    /// Takes the next key (not before the previous one in byte order) and returns the
    /// objects that can no longer collide, in key order.
    pub fn push(&mut self, key: String, item: T) -> Vec<Released<T>> {
        let keep = self.held.iter().take_while(|held| key.starts_with(held.key.as_str())).count();
        let released = self.held.split_off(keep);
        let mut collision = None;
        for held in &mut self.held {
            if key.as_bytes().get(held.key.len()) == Some(&b'/') {
                held.collision.get_or_insert_with(|| {
                    format!("key {:?} collides with key {key:?}, which needs it as a directory", held.key)
                });
                collision.get_or_insert_with(|| {
                    format!("key {key:?} collides with key {:?}: a file cannot also be a directory", held.key)
                });
            }
        }
        self.held.push(Released { key, item, collision });
        released
    }

    /// Releases everything still held: the listing ended.
    pub fn finish(&mut self) -> Vec<Released<T>> {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_a_drive_cannot_hold_are_refused_with_the_reason() {
        for (key, reason) in [
            ("a/b:c.txt", "contains ':'"),
            ("a/ lead.txt", "space"),
            ("trail./x", "ends with `.`"),
            ("dir/CON.txt", "reserved"),
            ("dir/Desktop.ini", "reserved"),
            ("x/_vti_cnf/y", "_vti_"),
            ("~$doc.docx", "`~$`"),
            ("q?.txt", "contains '?'"),
        ] {
            let refused = check_drive_names(key).unwrap_err();
            assert!(refused.contains(reason), "{key}: {refused}");
        }
        for key in ["Contracts/2026/Q1 report.pdf", "a/b.c/d", "console.log", "naïve café.txt"] {
            assert_eq!(check_drive_names(key), Ok(()), "{key}");
        }
    }

    #[test]
    fn names_dropbox_cannot_hold_are_refused_with_the_reason() {
        for (key, reason) in [("a\\b.txt", "'\\'"), ("dir /x", "ends with a space"), ("x\u{7f}", "DEL")] {
            let refused = DriveNames::Dropbox.check(key).unwrap_err();
            assert!(refused.contains(reason) && refused.contains("Dropbox"), "{key}: {refused}");
        }
        for key in ["a:b?c*.txt", " lead/trail.", "100% sure+plus#hash?query.txt"] {
            assert_eq!(DriveNames::Dropbox.check(key), Ok(()), "{key}");
        }
    }

    #[test]
    fn keys_equal_without_case_are_caught_after_the_first() {
        let mut folded = CaseFolded::default();
        assert!(folded.check("Docs/Report.pdf").is_ok());
        assert!(folded.check("Docs/other.pdf").is_ok());
        let refused = folded.check("docs/report.PDF").unwrap_err();
        assert!(refused.contains("\"Docs/Report.pdf\""), "{refused}");
        assert!(folded.check("Docs/Report.pdf").is_ok(), "the same key again is no collision");
    }

    fn refusal(key: &str) -> String {
        check_key("", key).unwrap_err()
    }

    #[test]
    fn ordinary_keys_are_accepted() {
        for key in ["a", "a/b/c.txt", "with space/ü.txt", ".hidden", "a/..b", "a/b..", "...", "x".repeat(255).as_str()]
        {
            assert_eq!(check_key("base/", key), Ok(()), "{key}");
        }
    }

    #[test]
    fn keys_a_filesystem_cannot_hold_are_refused_with_the_reason() {
        assert_eq!(
            refusal("a/../b"),
            "key \"a/../b\" has a `..` segment; a destination that is a directory tree cannot hold it"
        );
        assert!(refusal("..").contains("`..` segment"));
        assert!(refusal("./x").contains("`.` segment"));
        assert!(refusal("a/.").contains("`.` segment"));
        assert!(refusal("a//b").contains("empty segment"));
        assert!(refusal("/x").contains("starts with `/`"));
        assert!(refusal("dir/").contains("directory marker"));
        assert!(refusal("").contains("is empty"));
        assert!(refusal("a\0b").contains("NUL"));
        assert!(refusal(&format!("d/{}", "x".repeat(256))).contains("256 bytes"));
        assert!(refusal(".ferry-partial/local-1").contains("stages"));
        assert!(check_key(".ferry-partial/", "x").is_err(), "a base inside the staging directory");
        assert!(check_key("", ".ferry-partial-not/x").is_ok());
    }

    #[test]
    fn paths_longer_than_path_max_are_refused() {
        let key = vec!["n".repeat(200); 20].join("/");
        assert_eq!(key.len(), 4019);
        assert_eq!(check_key("", &key), Ok(()));
        let refused = check_key(&"b".repeat(100), &key).unwrap_err();
        assert!(refused.contains("4119 bytes"), "{refused}");
    }

    fn run(keys: &[&str]) -> Vec<(String, Option<String>)> {
        let mut collisions = Collisions::default();
        let mut out = Vec::new();
        for key in keys {
            out.extend(collisions.push((*key).to_owned(), ()));
        }
        out.extend(collisions.finish());
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out.into_iter().map(|released| (released.key, released.collision)).collect()
    }

    #[test]
    fn a_file_and_a_key_below_it_both_collide() {
        let out = run(&["w", "x", "x-1", "x.txt", "x/y", "x/z", "y"]);
        let collided: Vec<_> = out.iter().filter(|(_, reason)| reason.is_some()).map(|(key, _)| key.as_str()).collect();
        assert_eq!(collided, ["x", "x/y", "x/z"]);
        assert_eq!(out.len(), 7, "every key is released exactly once");
        let reason = |key: &str| out.iter().find(|(k, _)| k == key).and_then(|(_, r)| r.clone()).unwrap();
        assert_eq!(reason("x"), "key \"x\" collides with key \"x/y\", which needs it as a directory");
        assert_eq!(reason("x/z"), "key \"x/z\" collides with key \"x\": a file cannot also be a directory");
    }

    #[test]
    fn nested_collisions_and_clean_listings() {
        let collided = |keys: &[&str]| {
            run(keys).into_iter().filter(|(_, reason)| reason.is_some()).map(|(key, _)| key).collect::<Vec<_>>()
        };
        assert_eq!(collided(&["a", "a/b", "a/b/c"]), ["a", "a/b", "a/b/c"]);
        assert!(collided(&["a/b", "a/c", "ab", "b"]).is_empty());
        assert!(collided(&["x", "x-1", "x.y", "xy"]).is_empty());
    }

    #[test]
    fn only_prefixes_of_the_newest_key_are_held() {
        let mut collisions = Collisions::default();
        assert!(collisions.push("a".to_owned(), 1).is_empty());
        assert!(collisions.push("a.txt".to_owned(), 2).is_empty());
        let released = collisions.push("b".to_owned(), 3);
        assert_eq!(released.iter().map(|r| r.item).collect::<Vec<_>>(), [1, 2], "in key order");
        assert_eq!(collisions.held.len(), 1);
        for i in 0..1000 {
            collisions.push(format!("c/{i:04}"), i);
        }
        assert_eq!(collisions.held.len(), 1, "siblings are released at once");
    }
}
