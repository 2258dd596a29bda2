//! Writing the bundle: a gzip-compressed tar of in-memory files, created
//! under a temporary name with mode 0600 and renamed into place when
//! complete, so a failed run never leaves a half-written bundle behind.

use std::{
    fs::{self, OpenOptions},
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use flate2::{Compression, write::GzEncoder};

use crate::exit::CliError;

/// One file of the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path inside the archive, below the bundle's top directory.
    pub path: String,
    /// Content.
    pub data: Vec<u8>,
}

/// Writes `entries` under `top/` into a tar.gz at `output`.
pub fn write(output: &Path, top: &str, entries: &[Entry], mtime: u64) -> Result<(), CliError> {
    let partial = partial_path(output);
    let result = write_to(&partial, top, entries, mtime).and_then(|()| {
        fs::rename(&partial, output).map_err(|e| CliError::io("move the bundle to", output, e))
    });
    if result.is_err() {
        // Best effort: the error being reported matters more.
        let _ = fs::remove_file(&partial);
    }
    result
}

fn partial_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".partial-{}", std::process::id()));
    output.with_file_name(name)
}

fn write_to(path: &Path, top: &str, entries: &[Entry], mtime: u64) -> Result<(), CliError> {
    let io = |e| CliError::io("write the bundle", path, e);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| CliError::io("create the bundle", path, e))?;
    let mut builder = tar::Builder::new(GzEncoder::new(file, Compression::default()));
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(entry.data.len() as u64);
        header.set_mode(0o600);
        header.set_mtime(mtime);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(
                &mut header,
                format!("{top}/{}", entry.path),
                entry.data.as_slice(),
            )
            .map_err(io)?;
    }
    let mut file = builder.into_inner().map_err(io)?.finish().map_err(io)?;
    file.flush().map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::GzDecoder;
    use std::{io::Read, os::unix::fs::PermissionsExt};

    #[test]
    fn entries_come_back_under_the_top_directory_and_the_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("b.tar.gz");
        let entries = vec![
            Entry {
                path: "manifest.json".into(),
                data: b"{}".to_vec(),
            },
            Entry {
                path: "logs/01-node.log".into(),
                data: b"line\n".to_vec(),
            },
        ];
        write(&output, "top", &entries, 1_700_000_000).unwrap();
        assert_eq!(
            fs::metadata(&output).unwrap().permissions().mode() & 0o777,
            0o600
        );

        let mut archive = tar::Archive::new(GzDecoder::new(fs::File::open(&output).unwrap()));
        let mut read = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            read.push((path, data));
        }
        assert_eq!(
            read,
            [
                ("top/manifest.json".to_owned(), b"{}".to_vec()),
                ("top/logs/01-node.log".to_owned(), b"line\n".to_vec()),
            ]
        );
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no partial file left");
    }

    #[test]
    fn an_unwritable_destination_fails_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("missing-dir").join("b.tar.gz");
        let err = write(&output, "top", &[], 0).unwrap_err();
        assert!(err.line().contains("create the bundle"), "{}", err.line());
        assert!(fs::read_dir(dir.path()).unwrap().next().is_none());
    }
}
