//! The file-system side of cgroups: the (fakeable) kernel effects, reading
//! and parsing cgroup files, killing what a cgroup holds and removing it.

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use super::{CgroupError, KILL_ROUNDS, RMDIR_ATTEMPTS};

/// The kernel-side effects of cgroupfs that a plain directory does not have.
///
/// On the real cgroupfs `mkdir` fills the new directory with the interface
/// files (`cgroup.procs`, `memory.max`, ...), `rmdir` removes a cgroup whose
/// only entries are those files, writing `cgroup.kill` kills, and `kill(2)`
/// makes processes leave `cgroup.procs`. A temp directory does none of this,
/// so unit tests plug in `fake::FakeKernel`, which does exactly these parts
/// (and records every mutation so tests can assert it). Everything else —
/// detection, reading, parsing, deciding what to write — is the same code.
/// No test-only flag exists outside `cfg(test)`.
#[derive(Clone, Debug)]
pub(super) enum Fs {
    Kernel,
    #[cfg(test)]
    Fake(std::sync::Arc<super::fake::FakeKernel>),
}

impl Fs {
    pub(super) fn mkdir(&self, path: &Path) -> io::Result<()> {
        match self {
            Fs::Kernel => fs::create_dir(path),
            #[cfg(test)]
            Fs::Fake(k) => k.mkdir(path),
        }
    }

    pub(super) fn rmdir(&self, path: &Path) -> io::Result<()> {
        match self {
            Fs::Kernel => fs::remove_dir(path),
            #[cfg(test)]
            Fs::Fake(k) => k.rmdir(path),
        }
    }

    pub(super) fn write_raw(&self, path: &Path, value: &str) -> io::Result<()> {
        match self {
            Fs::Kernel => write_file(path, value),
            #[cfg(test)]
            Fs::Fake(k) => k.write(path, value),
        }
    }

    /// Writes `value` with one `write(2)`, never creating the file.
    pub(super) fn write(&self, path: &Path, value: &str) -> Result<(), CgroupError> {
        self.write_raw(path, value).map_err(|source| CgroupError::Write {
            path: path.to_owned(),
            value: value.to_owned(),
            source,
        })
    }

    /// SIGKILL one process; a process that is already gone is not an error.
    pub(super) fn kill(&self, pid: i32) -> io::Result<()> {
        match self {
            Fs::Kernel => sigkill(pid),
            #[cfg(test)]
            Fs::Fake(k) => k.kill(pid),
        }
    }
}

pub(super) fn write_file(path: &Path, value: &str) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).truncate(true).open(path)?;
    file.write_all(value.as_bytes())
}

pub(super) fn sigkill(pid: i32) -> io::Result<()> {
    // kill(0) and kill(-1) would signal our own group or every process.
    let pid =
        rustix::process::Pid::from_raw(pid).filter(|_| pid > 0).ok_or(io::Error::from_raw_os_error(libc::EINVAL))?;
    match rustix::process::kill_process(pid, rustix::process::Signal::KILL) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// An error with all its sources, for logs.
pub(super) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

pub(super) fn kill_dirs(fs: &Fs, dirs: &[&Path], kill_dir: Option<&Path>) -> Result<(), CgroupError> {
    let mut round = 0;
    loop {
        let mut pids = BTreeSet::new();
        let mut first_busy = None;
        for dir in dirs {
            let procs = dir.join("cgroup.procs");
            if !procs.exists() {
                continue;
            }
            let listed = read_pids(&procs)?;
            if first_busy.is_none() && !listed.is_empty() {
                first_busy = Some(*dir);
            }
            pids.extend(listed);
        }
        let Some(busy) = first_busy else {
            return Ok(());
        };
        if round == KILL_ROUNDS {
            return Err(CgroupError::KillIncomplete { path: busy.to_owned(), remaining: pids.len() });
        }
        match kill_dir {
            Some(dir) => fs.write(&dir.join("cgroup.kill"), "1")?,
            None => {
                for pid in pids {
                    fs.kill(pid).map_err(|source| CgroupError::Kill { pid, path: busy.to_owned(), source })?;
                }
            }
        }
        round += 1;
        // The first re-check is immediate; killed processes usually are gone.
        if round > 1 {
            std::thread::sleep(backoff(round));
        }
    }
}

/// One round of [`kill_dirs`] without waiting: every process in `dirs` is
/// sent SIGKILL (through `cgroup.kill` where there is one); they leave on
/// their own (for a box, before its init's end is seen).
pub(super) fn kill_dirs_now(fs: &Fs, dirs: &[&Path], kill_dir: Option<&Path>) -> Result<(), CgroupError> {
    if let Some(dir) = kill_dir {
        return fs.write(&dir.join("cgroup.kill"), "1");
    }
    for dir in dirs {
        let procs = dir.join("cgroup.procs");
        if !procs.exists() {
            continue;
        }
        for pid in read_pids(&procs)? {
            fs.kill(pid).map_err(|source| CgroupError::Kill { pid, path: dir.to_path_buf(), source })?;
        }
    }
    Ok(())
}

pub(super) fn backoff(round: u32) -> Duration {
    Duration::from_millis((1u64 << round.min(5)).min(20))
}

/// Removes `dir` and any cgroups beneath it, deepest first.
pub(super) fn remove_tree(fs: &Fs, dir: &Path) -> Result<(), CgroupError> {
    // A box's directory has no children: one rmdir usually does it.
    match fs.rmdir(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(_) => {}
    }
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(CgroupError::Read { path: dir.to_owned(), source }),
    };
    for entry in entries {
        let entry = entry.map_err(|source| CgroupError::Read { path: dir.to_owned(), source })?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(fs, &entry.path())?;
        }
    }
    let mut attempt = 0;
    loop {
        match fs.rmdir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt + 1 < RMDIR_ATTEMPTS => {
                std::thread::sleep(Duration::from_millis(1 << attempt));
                attempt += 1;
            }
            Err(source) => return Err(CgroupError::Remove { path: dir.to_owned(), source }),
        }
    }
}

pub(super) fn mkdir_existing_ok(fs: &Fs, path: &Path) -> Result<(), CgroupError> {
    match fs.mkdir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(CgroupError::Create { path: path.to_owned(), source }),
    }
}

pub(super) fn open_path_fd(dir: &Path) -> Result<OwnedFd, CgroupError> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .map(OwnedFd::from)
        .map_err(|source| CgroupError::Open { path: dir.to_owned(), source })
}

/// Box and instance names: one path component of `[A-Za-z0-9_.-]`, not
/// starting with a dot, at most 64 bytes.
pub(super) fn validate_name(name: &str) -> Result<(), CgroupError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(CgroupError::InvalidName(name.to_owned()))
    }
}

// Reading cgroup files.

pub(super) fn read_string(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|source| CgroupError::Read { path: path.to_owned(), source })
}

pub(super) fn read_words(path: &Path) -> Result<Vec<String>, CgroupError> {
    Ok(read_string(path)?.split_whitespace().map(str::to_owned).collect())
}

pub(super) fn read_u64(path: &Path) -> Result<u64, CgroupError> {
    let text = read_string(path)?;
    text.trim()
        .parse()
        .map_err(|_| CgroupError::Parse { path: path.to_owned(), reason: format!("not a number: {:?}", text.trim()) })
}

/// The value of `key` in a flat keyed file (`key value` per line), such as
/// `memory.events`, `pids.events`, `cpu.stat`, `memory.oom_control`.
pub(super) fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some(key)).then(|| words.next()?.parse().ok()).flatten()
    })
}

pub(super) fn read_pids(path: &Path) -> Result<Vec<i32>, CgroupError> {
    read_string(path)?
        .split_whitespace()
        .map(|word| match word.parse::<i32>() {
            Ok(pid) if pid > 0 => Ok(pid),
            _ => Err(CgroupError::Parse { path: path.to_owned(), reason: format!("not a pid: {word:?}") }),
        })
        .collect()
}
