//! `additional_files`: a zip archive, read with bounds (entry count, total
//! size as Judge0's `MAX_EXTRACT_SIZE`, each path by evald's path rule).

use std::io::Read;

use evald_engine::SourceFile;

use crate::request::defaults::MAX_EXTRACT_SIZE;

/// The most bytes the files of one archive may hold together.
pub const MAX_EXTRACT_BYTES: u64 = MAX_EXTRACT_SIZE * 1024;

/// The regular files of a zip archive (directories are skipped; a symbolic
/// link, a path outside the workspace or too much data is refused).
pub fn extract(zip: &[u8], max_entries: usize) -> Result<Vec<SourceFile>, String> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).map_err(|e| format!("not a zip archive: {e}"))?;
    if archive.len() > max_entries {
        return Err(format!("{} entries, more than the maximum of {max_entries}", archive.len()));
    }
    let mut files = Vec::new();
    let mut total = 0u64;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(|e| format!("entry {i}: {e}"))?;
        if entry.is_dir() {
            continue;
        }
        let name = entry.name().to_owned();
        if entry.is_symlink() {
            return Err(format!("{name:?} is a symbolic link"));
        }
        evald_proto::path::check_relative_path(&name).map_err(|e| format!("{name:?}: {e}"))?;
        let room = MAX_EXTRACT_BYTES - total;
        let mut content = Vec::new();
        (&mut entry).take(room + 1).read_to_end(&mut content).map_err(|e| format!("{name:?}: {e}"))?;
        total += content.len() as u64;
        if total > MAX_EXTRACT_BYTES {
            return Err(format!("the files hold more than {MAX_EXTRACT_BYTES} bytes"));
        }
        files.push(SourceFile { path: name, content });
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default();
        for (name, content) in entries {
            w.start_file(*name, options).expect("start");
            w.write_all(content).expect("write");
        }
        w.finish().expect("finish").into_inner()
    }

    #[test]
    fn bounded_and_path_safe() {
        let ok = extract(&zip_of(&[("run", b"echo hi"), ("lib/a.py", b"x=1")]), 10).expect("extracts");
        assert_eq!(ok.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(), ["run", "lib/a.py"]);
        assert!(extract(&zip_of(&[("../x", b"")]), 10).is_err());
        assert!(extract(&zip_of(&[("/etc/x", b"")]), 10).is_err());
        assert!(extract(&zip_of(&[("a", b""), ("b", b"")]), 1).expect_err("count").contains("entries"));
        let big = vec![0u8; MAX_EXTRACT_BYTES as usize + 1];
        assert!(extract(&zip_of(&[("big", &big)]), 10).expect_err("size").contains("more than"));
        assert!(extract(b"not a zip", 10).is_err());
    }
}
