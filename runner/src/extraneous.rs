//! The destination objects a sync found that the source lacks, kept on disk while the copy
//! runs so memory stays bounded however many there are, and read back one at a time when
//! (and only if) the job-wide deletion verdict allows deleting them.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One extraneous object: what deleting it needs, and what its report line names.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Extraneous {
    /// The key below the job's destination path.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
}

/// An append-only list of extraneous objects in an unnamed temporary file (gone with the
/// process, even a killed one). It holds object names only, which are metadata, never content.
pub struct ExtraneousLog {
    writer: BufWriter<File>,
    count: u64,
}

impl ExtraneousLog {
    /// A new, empty log in `directory` (the spool directory).
    pub fn create(directory: &Path) -> std::io::Result<Self> {
        Ok(Self { writer: BufWriter::new(tempfile::tempfile_in(directory)?), count: 0 })
    }

    /// Appends one object.
    pub fn push(&mut self, object: &Extraneous) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.writer, object).map_err(std::io::Error::other)?;
        self.writer.write_all(b"\n")?;
        self.count += 1;
        Ok(())
    }

    /// How many objects were appended.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Reads the objects back in the order they were appended.
    pub fn into_objects(self) -> std::io::Result<impl Iterator<Item = std::io::Result<Extraneous>>> {
        let mut file = self.writer.into_inner().map_err(|error| error.into_error())?;
        file.seek(SeekFrom::Start(0))?;
        Ok(BufReader::new(file).lines().map(|line| {
            let line = line?;
            serde_json::from_str(&line).map_err(std::io::Error::other)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_come_back_in_order_from_disk() {
        let directory = tempfile::tempdir().unwrap();
        let mut log = ExtraneousLog::create(directory.path()).unwrap();
        for index in 0..10_000u64 {
            log.push(&Extraneous { key: format!("dir/{index:05}\nodd \"name\""), size: index }).unwrap();
        }
        assert_eq!(log.count(), 10_000);
        let back: Vec<Extraneous> = log.into_objects().unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(back.len(), 10_000);
        assert_eq!(back[42], Extraneous { key: "dir/00042\nodd \"name\"".into(), size: 42 });
        assert!(std::fs::read_dir(directory.path()).unwrap().next().is_none(), "the file has no name");
    }
}
