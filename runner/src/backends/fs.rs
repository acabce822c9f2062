//! A local directory, or a PersistentVolumeClaim mounted into the runner pod.

use std::path::{Path, PathBuf};

use super::{Backend, BackendInput, Capabilities, ReportedChecksum};
use crate::storage::StorageError;

/// What a filesystem offers: cheap reads, no checksum of its own, settable times.
pub const CAPABILITIES: Capabilities = Capabilities {
    local: true,
    sorted_listing: false,
    checksum: ReportedChecksum::None,
    uploads_in_parts: true,
    sets_modified_time: true,
    whole_second_times: false,
    max_key: None,
    directory_tree: true,
    upload_needs_size: false,
    drive_names: None,
};

/// Builds the operator for reads; writes go through `safe_fs`, since OpenDAL's filesystem
/// writer follows links under the root.
pub fn build(input: &BackendInput<'_>) -> Result<Backend, StorageError> {
    let fs = input.settings(input.spec.fs.as_ref())?;
    let root = resolve_root(input.binding, &fs.root, input.manifest_directory)?;
    let builder = opendal::services::Fs::default().root(&root.to_string_lossy());
    let operator = opendal::Operator::new(builder).map_err(|e| input.build_error(e))?;
    Ok(Backend { local_root: Some(root), ..Backend::new(operator, CAPABILITIES) })
}

/// An absolute root as written, or `./relative` resolved against the manifest's directory.
pub fn resolve_root(binding: &str, root: &str, manifest_directory: Option<&Path>) -> Result<PathBuf, StorageError> {
    if let Some(relative) = root.strip_prefix("./") {
        let directory = manifest_directory
            .ok_or_else(|| StorageError::RelativeRoot { binding: binding.to_owned(), root: root.to_owned() })?;
        let joined = directory.join(relative);
        return Ok(std::path::absolute(&joined).unwrap_or(joined));
    }
    Ok(PathBuf::from(root))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_roots_need_a_manifest_directory() {
        assert!(resolve_root("b", "./data", None).is_err());
        assert_eq!(resolve_root("b", "./data", Some(Path::new("/m"))).unwrap(), PathBuf::from("/m/data"));
        assert_eq!(resolve_root("b", "/abs", None).unwrap(), PathBuf::from("/abs"));
    }
}
