//! Standard output, buffered, knowing which records reached it. A closed pipe
//! (`| head`) ends a run quietly; any other write error (a full disk, an I/O
//! error) is an error, and the records it kept from being written are counted.

use std::fs::File;
use std::io::{self, Write};
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, FromRawFd};

/// Buffered bytes that trigger a write: a flood is written in large blocks.
const CAPACITY: usize = 64 << 10;

enum State {
    Open,
    /// The reader went away: nothing more can be written, and that is fine.
    Closed,
    /// A write failed for another reason.
    Failed(io::Error),
}

pub struct Sink {
    /// fd 1, never closed by us, or a file of our own (`owned`).
    out: ManuallyDrop<File>,
    owned: bool,
    buf: Vec<u8>,
    /// For each record in `buf`: the offset where it ends, and how many
    /// records it stands for (a JSON table stands for its rows).
    ends: Vec<(usize, u64)>,
    state: State,
    not_written: u64,
}

impl Sink {
    pub fn stdout() -> Sink {
        Sink {
            // SAFETY: fd 1 stays open for the life of the process; ManuallyDrop
            // keeps this File from closing it.
            out: ManuallyDrop::new(unsafe { File::from_raw_fd(1) }),
            owned: false,
            buf: Vec::with_capacity(CAPACITY),
            ends: Vec::new(),
            state: State::Open,
            not_written: 0,
        }
    }

    /// Writes to `file` instead of standard output.
    pub fn file(file: File) -> Sink {
        let mut sink = Sink::stdout();
        sink.out = ManuallyDrop::new(file);
        sink.owned = true;
        sink
    }

    /// Writes something that is not a record (a header, a blank line).
    pub fn text(&mut self, write: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) {
        if self.is_open() {
            // Writing to a Vec cannot fail.
            let _ = write(&mut self.buf);
        }
    }

    /// Writes one record.
    pub fn record(&mut self, write: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) {
        self.records(1, write);
    }

    /// Writes `count` records in one piece.
    pub fn records(&mut self, count: u64, write: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) {
        match self.state {
            State::Open => {
                let _ = write(&mut self.buf);
                self.ends.push((self.buf.len(), count));
                if self.buf.len() >= CAPACITY {
                    self.flush();
                }
            }
            State::Closed | State::Failed(_) => self.not_written += count,
        }
    }

    /// Writes out what is buffered. On failure, the records not wholly
    /// written are counted, and the sink writes nothing more.
    pub fn flush(&mut self) {
        if !self.is_open() || self.buf.is_empty() {
            return;
        }
        let mut done = 0;
        let result = loop {
            if done == self.buf.len() {
                break Ok(());
            }
            match self.out.write(&self.buf[done..]) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        if let Err(e) = result {
            self.not_written += self
                .ends
                .iter()
                .filter(|(end, _)| *end > done)
                .map(|(_, count)| count)
                .sum::<u64>();
            self.state = match e.kind() {
                io::ErrorKind::BrokenPipe => State::Closed,
                _ => State::Failed(e),
            };
        }
        self.buf.clear();
        self.ends.clear();
    }

    /// Notices a reader that went away while nothing was written: a pipe
    /// whose reader closed reports POLLERR, a hung-up terminal POLLHUP.
    pub fn check_reader(&mut self) {
        if !self.is_open() {
            return;
        }
        let mut pfd = libc::pollfd {
            fd: self.out.as_raw_fd(),
            events: 0,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no waiting.
        let ready = unsafe { libc::poll(&mut pfd, 1, 0) };
        if ready > 0 && pfd.revents & (libc::POLLERR | libc::POLLHUP) != 0 {
            self.state = State::Closed;
        }
    }

    /// Whether records are still being written.
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open)
    }

    /// The write error that ended the output, with the records it kept from
    /// being written; None if the output is open or its reader just left.
    pub fn failure(&self) -> Option<(&io::Error, u64)> {
        match &self.state {
            State::Failed(e) => Some((e, self.not_written)),
            _ => None,
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if self.owned {
            // SAFETY: dropped once, here, and never used again.
            unsafe { ManuallyDrop::drop(&mut self.out) };
        }
    }
}
