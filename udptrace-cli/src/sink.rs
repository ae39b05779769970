//! Standard output, buffered, knowing which records reached it. A closed pipe
//! (`| head`) ends a run quietly; any other write error (a full disk, an I/O
//! error) is an error, and the records it kept from being written are counted.
//! A file of our own is then cut back to its last whole record.

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
    /// For each record or text in `buf`: the offset where it ends, and how
    /// many records it stands for (a JSON table stands for its rows, a
    /// header for none).
    ends: Vec<(usize, u64)>,
    state: State,
    not_written: u64,
    /// Bytes written before `buf` that end with a whole record or text: the
    /// length a file of ours is cut back to when a write fails midway.
    whole: u64,
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
            whole: 0,
        }
    }

    /// Writes to `file`, empty, instead of standard output.
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
            // It ends whole as a record does (a capture's header blocks), and counts none.
            self.ends.push((self.buf.len(), 0));
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
        match result {
            Ok(()) => self.whole += self.buf.len() as u64,
            Err(e) => {
                self.not_written += self
                    .ends
                    .iter()
                    .filter(|(end, _)| *end > done)
                    .map(|(_, count)| count)
                    .sum::<u64>();
                let kept = self.ends.iter().rev().find(|(end, _)| *end <= done);
                self.whole += kept.map_or(0, |(end, _)| *end as u64);
                self.cut_back();
                self.state = match e.kind() {
                    io::ErrorKind::BrokenPipe => State::Closed,
                    _ => State::Failed(e),
                };
            }
        }
        self.buf.clear();
        self.ends.clear();
    }

    /// After a failed write, cuts a regular file of ours back to its last
    /// whole record: a record cut short is one its reader cannot parse (a
    /// capture's block, which tshark reports as cut short). Standard output
    /// and pipes are not ours to cut.
    fn cut_back(&self) {
        let regular = self.out.metadata().is_ok_and(|m| m.is_file());
        if self.owned && regular {
            // The write error is the one to report; this is a best effort.
            let _ = self.out.set_len(self.whole);
        }
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
