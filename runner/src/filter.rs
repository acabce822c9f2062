//! Which objects take part in a job: globs on the path, size and time bounds.

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::object::ObjectInfo;
use ferry_api::Filter;

/// A compiled `spec.filter`.
#[derive(Clone, Debug, Default)]
pub struct ObjectFilter {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
    min_size: Option<u64>,
    max_size: Option<u64>,
    modified_after: Option<jiff::Timestamp>,
    modified_before: Option<jiff::Timestamp>,
}

/// A glob that does not compile.
#[derive(Debug, thiserror::Error)]
#[error("spec.filter.{field}: {pattern:?} is not a valid glob: {reason}")]
pub struct FilterError {
    field: &'static str,
    pattern: String,
    reason: String,
}

fn compile(field: &'static str, patterns: &[String]) -> Result<Option<GlobSet>, FilterError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        let glob =
            globset::GlobBuilder::new(pattern)
                .literal_separator(true)
                .build()
                .or_else(|_| Glob::new(pattern))
                .map_err(|error| FilterError { field, pattern: pattern.clone(), reason: error.kind().to_string() })?;
        builder.add(glob);
    }
    builder.build().map(Some).map_err(|error| FilterError {
        field,
        pattern: patterns.join(", "),
        reason: error.to_string(),
    })
}

impl ObjectFilter {
    /// Compiles a job's filter.
    pub fn new(filter: Option<&Filter>) -> Result<Self, FilterError> {
        let Some(filter) = filter else { return Ok(Self::default()) };
        Ok(Self {
            include: compile("include", &filter.include)?,
            exclude: compile("exclude", &filter.exclude)?,
            min_size: filter.min_size.as_ref().map(|q| q.bytes()),
            max_size: filter.max_size.as_ref().map(|q| q.bytes()),
            modified_after: filter.modified_after.as_ref().map(|t| t.0),
            modified_before: filter.modified_before.as_ref().map(|t| t.0),
        })
    }

    /// Whether the path passes `include`/`exclude` (this is all that is applied to
    /// destination objects when deciding what sync may delete).
    pub fn path_selected(&self, key: &str) -> bool {
        self.include.as_ref().is_none_or(|set| set.is_match(key))
            && !self.exclude.as_ref().is_some_and(|set| set.is_match(key))
    }

    /// Whether a source object takes part in the job.
    pub fn selected(&self, object: &ObjectInfo) -> bool {
        let after = |bound: jiff::Timestamp| object.modified.is_some_and(|m| m >= bound);
        let before = |bound: jiff::Timestamp| object.modified.is_some_and(|m| m < bound);
        self.path_selected(&object.key)
            && self.min_size.is_none_or(|min| object.size >= min)
            && self.max_size.is_none_or(|max| object.size <= max)
            && self.modified_after.is_none_or(after)
            && self.modified_before.is_none_or(before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_api::ByteQuantity;

    fn object(key: &str, size: u64, modified: &str) -> ObjectInfo {
        ObjectInfo { key: key.into(), size, modified: Some(modified.parse().unwrap()), checksum: None }
    }

    #[test]
    fn globs_sizes_and_times() {
        let filter = ObjectFilter::new(Some(&Filter {
            include: vec!["**/*.pdf".into(), "*.pdf".into()],
            exclude: vec!["tmp/**".into()],
            min_size: Some(ByteQuantity::parse("1Ki").unwrap()),
            max_size: Some(ByteQuantity::parse("1Mi").unwrap()),
            modified_after: Some(k8s_time("2024-01-01T00:00:00Z")),
            modified_before: Some(k8s_time("2025-01-01T00:00:00Z")),
        }))
        .unwrap();
        assert!(filter.selected(&object("a/b/report.pdf", 2048, "2024-06-01T00:00:00Z")));
        assert!(filter.selected(&object("top.pdf", 2048, "2024-06-01T00:00:00Z")));
        assert!(!filter.selected(&object("tmp/x.pdf", 2048, "2024-06-01T00:00:00Z")), "excluded");
        assert!(!filter.selected(&object("a/b/report.txt", 2048, "2024-06-01T00:00:00Z")), "not included");
        assert!(!filter.selected(&object("a.pdf", 10, "2024-06-01T00:00:00Z")), "too small");
        assert!(!filter.selected(&object("a.pdf", 2 << 20, "2024-06-01T00:00:00Z")), "too large");
        assert!(!filter.selected(&object("a.pdf", 2048, "2023-06-01T00:00:00Z")), "too old");
        assert!(!filter.selected(&object("a.pdf", 2048, "2025-01-01T00:00:00Z")), "before is exclusive");
    }

    #[test]
    fn single_star_does_not_cross_directories() {
        let filter = ObjectFilter::new(Some(&Filter { include: vec!["*.txt".into()], ..Default::default() })).unwrap();
        assert!(filter.path_selected("a.txt"));
        assert!(!filter.path_selected("dir/a.txt"));
    }

    fn k8s_time(text: &str) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(text.parse().unwrap())
    }
}
