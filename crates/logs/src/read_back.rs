//! Reading a file back from its end, a chunk at a time: `herdctl tail`, and the supervisor
//! quoting a node's last words, read only the lines they show, however long the file.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

/// How much is read at a time, from the end backwards.
const CHUNK: u64 = 64 * 1024;

/// The offset just after the last newline before `len` (0 when there is none).
pub fn complete_end(file: &mut File, len: u64) -> io::Result<u64> {
    let mut end = len;
    let mut buf = vec![0u8; CHUNK as usize];
    while end > 0 {
        let size = CHUNK.min(end);
        let start = end - size;
        let buf = &mut buf[..size as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(buf)?;
        if let Some(i) = buf.iter().rposition(|b| *b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// The last `n` lines of the file at `path`, read from its end (empty if it cannot be read):
/// for quoting a log without reading all of it.
pub fn last_lines_of(path: &Path, n: usize) -> Vec<Vec<u8>> {
    let read = || -> io::Result<Vec<Vec<u8>>> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        read_back(&mut file, len, n)
    };
    read().unwrap_or_default()
}

/// The last `want` lines of `file[..end]` (fewer when it has fewer), read backwards in
/// chunks from `end`. A last line without a newline counts as a line.
pub fn read_back(file: &mut File, end: u64, want: usize) -> io::Result<Vec<Vec<u8>>> {
    if want == 0 || end == 0 {
        return Ok(Vec::new());
    }
    let mut start = end;
    let mut buf: Vec<u8> = Vec::new();
    let mut newlines = 0usize;
    let mut trailing_newline = false;
    while start > 0 {
        let size = CHUNK.min(start);
        start -= size;
        let mut chunk = vec![0u8; size as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk)?;
        if buf.is_empty() {
            trailing_newline = chunk.last() == Some(&b'\n');
        }
        newlines += chunk.iter().filter(|b| **b == b'\n').count();
        chunk.extend_from_slice(&buf);
        buf = chunk;
        // `want` newlines before the last line mean `want` complete lines in the buffer.
        if newlines - usize::from(trailing_newline) >= want {
            break;
        }
    }
    let body = if trailing_newline {
        &buf[..buf.len() - 1]
    } else {
        &buf[..]
    };
    let mut pieces: Vec<&[u8]> = body.split(|b| *b == b'\n').collect();
    if start > 0 {
        pieces.remove(0); // begins mid-line
    }
    let skip = pieces.len().saturating_sub(want);
    Ok(pieces[skip..].iter().map(|l| l.to_vec()).collect())
}
