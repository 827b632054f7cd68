//! A box's standard streams: pipes or a terminal, the box's ends (sent to
//! its init with the plan) and the host's ends (non-blocking).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{Gid, Uid};
use rustix::io::Errno;
use rustix::pipe::PipeFlags;
use rustix::pty::OpenptFlags;
use rustix::termios::Winsize;

use crate::sandbox::SandboxError;
use crate::spec::Stdin;

/// The box's ends of its streams.
enum ChildEnds {
    /// A terminal's slave side: stdin, stdout and stderr at once.
    Terminal(OwnedFd),
    /// `stdin: None` is the host's `/dev/null`.
    Pipes { stdin: Option<OwnedFd>, stdout: OwnedFd, stderr: OwnedFd },
}

/// The host's ends, non-blocking.
#[derive(Default)]
pub(crate) struct ParentEnds {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    pub pty: Option<OwnedFd>,
}

/// The descriptors of a box's standard streams on both sides.
pub(crate) struct Stdio {
    child: ChildEnds,
    parent: ParentEnds,
}

fn io(what: &'static str) -> impl FnOnce(Errno) -> SandboxError {
    move |e| SandboxError::Io { what: what.into(), source: e.into() }
}

impl Stdio {
    pub(crate) fn new(stdin: &Stdin) -> Result<Stdio, SandboxError> {
        if let Stdin::Pty { rows, cols } = stdin {
            let (master, slave) = open_pty(*rows, *cols).map_err(io("opening a terminal"))?;
            return Ok(Stdio {
                child: ChildEnds::Terminal(slave),
                parent: ParentEnds { pty: Some(master), ..ParentEnds::default() },
            });
        }
        let mut parent = ParentEnds::default();
        let child_stdin = match stdin {
            Stdin::Null => None,
            _ => {
                let (r, w) = pipe()?;
                rustix::io::ioctl_fionbio(&w, true).map_err(io("setting O_NONBLOCK"))?;
                parent.stdin = Some(w);
                Some(r)
            }
        };
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        rustix::io::ioctl_fionbio(&out_r, true).map_err(io("setting O_NONBLOCK"))?;
        rustix::io::ioctl_fionbio(&err_r, true).map_err(io("setting O_NONBLOCK"))?;
        parent.stdout = Some(out_r);
        parent.stderr = Some(err_r);
        Ok(Stdio { child: ChildEnds::Pipes { stdin: child_stdin, stdout: out_w, stderr: err_w }, parent })
    }

    /// Whether the streams are a terminal.
    pub(crate) fn pty(&self) -> bool {
        matches!(self.child, ChildEnds::Terminal(_))
    }

    /// Makes the box user the owner of its pipes and terminal, so that the
    /// program can reopen them (`/dev/stdin`, `tee /dev/stderr`).
    pub(crate) fn give_to(&self, uid: u32) {
        let owned: [Option<&OwnedFd>; 3] = match &self.child {
            ChildEnds::Terminal(fd) => [Some(fd), None, None],
            ChildEnds::Pipes { stdin, stdout, stderr } => [stdin.as_ref(), Some(stdout), Some(stderr)],
        };
        for fd in owned.into_iter().flatten() {
            let _ = rustix::fs::fchown(fd, Some(Uid::from_raw_unchecked(uid)), Some(Gid::from_raw_unchecked(uid)));
        }
    }

    /// The box's stdin, stdout and stderr, as its init gets them.
    pub(crate) fn child_fds<'a>(&'a self, dev_null: BorrowedFd<'a>) -> [BorrowedFd<'a>; 3] {
        match &self.child {
            ChildEnds::Terminal(fd) => [fd.as_fd(), fd.as_fd(), fd.as_fd()],
            ChildEnds::Pipes { stdin, stdout, stderr } => {
                [stdin.as_ref().map_or(dev_null, AsFd::as_fd), stdout.as_fd(), stderr.as_fd()]
            }
        }
    }

    /// Closes the box's ends (its init has its own copies) and returns the
    /// host's.
    pub(crate) fn into_parent_ends(self) -> ParentEnds {
        self.parent
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(io("creating a pipe"))
}

/// A new terminal of `rows` by `cols`: its master side (non-blocking) and
/// its slave side, both close-on-exec.
fn open_pty(rows: u16, cols: u16) -> Result<(OwnedFd, OwnedFd), Errno> {
    let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
    let master = rustix::pty::openpt(flags)?;
    rustix::pty::grantpt(&master)?;
    rustix::pty::unlockpt(&master)?;
    rustix::termios::tcsetwinsize(&master, Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 })?;
    let slave = rustix::pty::ioctl_tiocgptpeer(&master, flags)?;
    rustix::io::ioctl_fionbio(&master, true)?;
    Ok((master, slave))
}
