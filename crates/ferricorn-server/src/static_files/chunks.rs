//! A response body read from a file piece by piece, never whole into memory.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use bytes::{Bytes, BytesMut};

/// Reads all of a small file (for the cache); `None` if it changed size under us.
pub fn read_whole(file: &File, len: u64) -> Option<Bytes> {
    let mut buf = BytesMut::zeroed(len as usize);
    file.read_exact_at(&mut buf, 0).ok()?;
    Some(buf.freeze())
}

/// Bytes read per frame: one read for typical assets, bounded memory for large ones.
const CHUNK: u64 = 128 * 1024;

#[derive(Debug)]
pub enum Piece {
    /// Literal bytes (the part headers of a multipart/byteranges body).
    Bytes(Bytes),
    /// `len` bytes of the file from `offset`.
    File { offset: u64, len: u64 },
}

impl Piece {
    fn len(&self) -> u64 {
        match self {
            Piece::Bytes(b) => b.len() as u64,
            Piece::File { len, .. } => *len,
        }
    }
}

/// Where `Piece::File` bytes come from.
#[derive(Debug)]
pub enum Source {
    File(File),
    /// The whole file, already in memory (small files, see `cache`).
    Memory(Bytes),
}

#[derive(Debug)]
pub struct FileChunks {
    source: Source,
    pieces: VecDeque<Piece>,
    remaining: u64,
}

impl FileChunks {
    pub fn new(source: Source, pieces: Vec<Piece>) -> Self {
        let remaining = pieces.iter().map(Piece::len).sum();
        Self {
            source,
            pieces: pieces.into(),
            remaining,
        }
    }

    /// Bytes still to be produced (the exact size hint).
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// The next frame. Reads are synchronous `pread`s: from the page cache they cost
    /// less than a hand-off to a blocking pool would (nginx does the same without aio).
    /// A file that shrank under us ends the body with an error, so the client sees a
    /// truncated response rather than a wrong one.
    pub fn next_chunk(&mut self) -> Option<io::Result<Bytes>> {
        let piece = self.pieces.pop_front()?;
        let chunk = match piece {
            Piece::Bytes(b) => b,
            Piece::File { offset, len } => {
                let file = match &self.source {
                    Source::Memory(all) => {
                        let (start, end) = (offset as usize, (offset + len) as usize);
                        if end > all.len() {
                            return Some(Err(io::ErrorKind::UnexpectedEof.into()));
                        }
                        self.remaining -= len;
                        return Some(Ok(all.slice(start..end)));
                    }
                    Source::File(f) => f,
                };
                let n = len.min(CHUNK);
                let mut buf = BytesMut::zeroed(n as usize);
                let mut filled = 0;
                while filled < buf.len() {
                    match file.read_at(&mut buf[filled..], offset + filled as u64) {
                        Ok(0) => return Some(Err(io::ErrorKind::UnexpectedEof.into())),
                        Ok(k) => filled += k,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Some(Err(e)),
                    }
                }
                if len > n {
                    self.pieces.push_front(Piece::File {
                        offset: offset + n,
                        len: len - n,
                    });
                }
                buf.freeze()
            }
        };
        self.remaining -= chunk.len() as u64;
        Some(Ok(chunk))
    }
}
