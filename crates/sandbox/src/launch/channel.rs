//! Typed messages over a Unix stream socket.
//!
//! A frame is the body's length (`u32`, little endian) and the body, the
//! message serialized with postcard. Descriptors travel with a frame's
//! first byte (`SCM_RIGHTS`), so a receiver that reads the 4-byte header
//! with room for descriptors gets exactly the frame's. Receiving a message
//! of another kind than the one expected is a typed error
//! ([`ChannelError::UnexpectedMessage`]).

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::io::Errno;
use rustix::net::{
    recvmsg, sendmsg, AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::sys;

/// Bytes of a frame's header.
const HEADER: usize = 4;

/// Most descriptors one message carries.
pub(crate) const MAX_FDS: usize = 8;

/// Largest body accepted (a plan carries the files of the workspace).
const MAX_BODY: usize = 1 << 30;

/// Why a message could not be sent or received.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ChannelError {
    #[error("the other side closed the channel")]
    Closed,
    #[error(transparent)]
    Io(#[from] Errno),
    #[error("encoding a message: {0}")]
    Encode(postcard::Error),
    #[error("decoding a message: {0}")]
    Decode(postcard::Error),
    #[error("a message of {0} bytes is too large")]
    TooLarge(usize),
    #[error("a message came with more than {MAX_FDS} descriptors")]
    TooManyFds,
    #[error("expected the message {expected}, received {received}")]
    UnexpectedMessage { expected: &'static str, received: &'static str },
}

impl From<ChannelError> for io::Error {
    fn from(e: ChannelError) -> io::Error {
        match e {
            ChannelError::Io(errno) => errno.into(),
            other => io::Error::other(other),
        }
    }
}

/// A message as received, with the descriptors that came with it.
pub(crate) struct Received<M> {
    pub message: M,
    pub fds: Vec<OwnedFd>,
}

/// One end of a socket pair carrying framed messages.
#[derive(Debug)]
pub(crate) struct Channel(OwnedFd);

impl Channel {
    /// A connected pair (close-on-exec).
    pub(crate) fn pair() -> Result<(Channel, Channel), Errno> {
        let (a, b) = rustix::net::socketpair(AddressFamily::UNIX, SocketType::STREAM, SocketFlags::CLOEXEC, None)?;
        Ok((Channel(a), Channel(b)))
    }

    pub(crate) fn from_fd(fd: OwnedFd) -> Channel {
        Channel(fd)
    }

    pub(crate) fn into_fd(self) -> OwnedFd {
        self.0
    }

    /// Sends `message` with `fds`. Allocates the frame: not for a process
    /// that must stay async-signal-safe (see [`Channel::send_small`]).
    pub(crate) fn send<M: Serialize>(&self, message: &M, fds: &[BorrowedFd<'_>]) -> Result<(), ChannelError> {
        let body = postcard::to_stdvec(message).map_err(ChannelError::Encode)?;
        let len = u32::try_from(body.len()).map_err(|_| ChannelError::TooLarge(body.len()))?;
        self.send_frame(&len.to_le_bytes(), &body, fds)
    }

    /// Sends a small `message` without descriptors, serialized into a
    /// buffer on the stack: async-signal-safe.
    pub(crate) fn send_small<M: Serialize>(&self, message: &M) -> Result<(), ChannelError> {
        let mut frame = [0u8; SMALL];
        let len = postcard::to_slice(message, &mut frame[HEADER..]).map_err(ChannelError::Encode)?.len();
        frame[..HEADER].copy_from_slice(&(len as u32).to_le_bytes());
        sys::send_all(self.0.as_fd(), &frame[..HEADER + len])?;
        Ok(())
    }

    /// One `sendmsg` with the header, the body and the descriptors; what
    /// it did not take follows (descriptors go with the first byte).
    fn send_frame(&self, header: &[u8; HEADER], body: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), ChannelError> {
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if fds.len() > MAX_FDS || (!fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds))) {
            return Err(ChannelError::TooManyFds);
        }
        let sent = loop {
            match sendmsg(&self.0, &[IoSlice::new(header), IoSlice::new(body)], &mut control, SendFlags::NOSIGNAL) {
                Err(Errno::INTR) => continue,
                other => break other?,
            }
        };
        let header_left = &header[sent.min(HEADER)..];
        sys::send_all(self.0.as_fd(), header_left)?;
        sys::send_all(self.0.as_fd(), &body[sent.saturating_sub(HEADER)..])?;
        Ok(())
    }

    /// Receives one message (blocking) with its descriptors (close-on-exec).
    /// [`ChannelError::Closed`] at the end of the stream before a frame.
    pub(crate) fn recv<M: DeserializeOwned>(&self) -> Result<Received<M>, ChannelError> {
        let mut header = [0u8; HEADER];
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let msg = loop {
            let mut iov = [IoSliceMut::new(&mut header)];
            match recvmsg(&self.0, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC | RecvFlags::WAITALL) {
                Err(Errno::INTR) => continue,
                other => break other?,
            }
        };
        let mut fds = Vec::new();
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = message {
                fds.extend(received);
            }
        }
        if msg.flags.contains(ReturnFlags::CTRUNC) {
            return Err(ChannelError::TooManyFds);
        }
        match msg.bytes {
            0 if fds.is_empty() => return Err(ChannelError::Closed),
            HEADER => {}
            _ => return Err(ChannelError::Closed),
        }
        let len = u32::from_le_bytes(header) as usize;
        if len > MAX_BODY {
            return Err(ChannelError::TooLarge(len));
        }
        let mut body = vec![0u8; len];
        if !sys::read_exact(self.0.as_fd(), &mut body)? {
            return Err(ChannelError::Closed);
        }
        let message = postcard::from_bytes(&body).map_err(ChannelError::Decode)?;
        Ok(Received { message, fds })
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// Largest frame of a small message ([`Channel::send_small`], [`SmallFrame`]).
const SMALL: usize = 64;

/// One small frame read piece by piece as its bytes arrive, without
/// blocking (the driver reads an init's report this way).
pub(crate) struct SmallFrame {
    buf: [u8; SMALL],
    len: usize,
}

impl Default for SmallFrame {
    fn default() -> Self {
        SmallFrame { buf: [0; SMALL], len: 0 }
    }
}

impl SmallFrame {
    /// The frame's size once its header is in.
    fn size(&self) -> Result<Option<usize>, ChannelError> {
        if self.len < HEADER {
            return Ok(None);
        }
        let body = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if body > SMALL - HEADER {
            return Err(ChannelError::TooLarge(body));
        }
        Ok(Some(HEADER + body))
    }

    /// Where the next bytes go (never past the frame's end).
    pub(crate) fn spare(&mut self) -> Result<&mut [u8], ChannelError> {
        let end = self.size()?.unwrap_or(HEADER);
        Ok(&mut self.buf[self.len..end])
    }

    /// Records `n` bytes written into [`SmallFrame::spare`].
    pub(crate) fn filled(&mut self, n: usize) {
        self.len += n;
    }

    /// The message, once the frame is complete.
    pub(crate) fn message<M: DeserializeOwned>(&self) -> Result<Option<M>, ChannelError> {
        match self.size()? {
            Some(size) if self.len == size => {
                postcard::from_bytes(&self.buf[HEADER..size]).map(Some).map_err(ChannelError::Decode)
            }
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::launch::message::{InitReport, InitRequest, Step};
    use crate::launch::payload::PayloadStep;

    #[test]
    fn messages_travel_with_their_descriptors() {
        let (a, b) = Channel::pair().unwrap();
        let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        a.send(&InitRequest::<()>::EnterCgroups, &[r.as_fd(), w.as_fd()]).unwrap();
        let received = b.recv::<InitRequest<()>>().unwrap();
        assert!(matches!(received.message, InitRequest::EnterCgroups));
        assert_eq!(received.fds.len(), 2);
        // The descriptors are the pipe's: what goes in one comes out of the other.
        sys::write_all(received.fds[1].as_fd(), b"x").unwrap();
        let mut byte = [0u8; 1];
        assert!(sys::read_exact(r.as_fd(), &mut byte).unwrap());
        assert_eq!(&byte, b"x");
    }

    #[test]
    fn a_large_body_arrives_whole_and_the_end_of_the_stream_is_closed() {
        let (a, b) = Channel::pair().unwrap();
        let body = vec![7u8; 4 << 20];
        let reader = std::thread::spawn(move || {
            let got = b.recv::<Vec<u8>>().unwrap().message;
            (got, b.recv::<Vec<u8>>().map(|r| r.message))
        });
        a.send(&body, &[]).unwrap();
        drop(a);
        let (got, next) = reader.join().unwrap();
        assert_eq!(got, body);
        assert!(matches!(next, Err(ChannelError::Closed)), "{next:?}");
    }

    #[test]
    fn a_small_frame_is_read_piece_by_piece() {
        let (a, b) = Channel::pair().unwrap();
        let report = InitReport::SetupFailed { step: Step::Payload(PayloadStep::Exec), errno: 2 };
        a.send_small(&report).unwrap();
        let mut frame = SmallFrame::default();
        loop {
            assert_eq!(frame.message::<InitReport>().unwrap(), None);
            // One byte at a time, as a slow socket would give them.
            let spare = frame.spare().unwrap();
            let n = rustix::io::read(&b, &mut spare[..1]).unwrap();
            frame.filled(n);
            if let Some(message) = frame.message::<InitReport>().unwrap() {
                assert_eq!(message, report);
                break;
            }
        }
    }

    #[test]
    fn a_frame_too_large_for_a_small_one_is_refused() {
        let mut frame = SmallFrame::default();
        frame.spare().unwrap().copy_from_slice(&1000u32.to_le_bytes());
        frame.filled(4);
        assert!(matches!(frame.spare(), Err(ChannelError::TooLarge(1000))));
    }

    #[test]
    fn an_unexpected_message_names_both() {
        let e = ChannelError::UnexpectedMessage {
            expected: "Moved",
            received: InitReport::Exited { wait_status: 0, max_rss: 0 }.name(),
        };
        assert_eq!(e.to_string(), "expected the message Moved, received Exited");
    }
}
