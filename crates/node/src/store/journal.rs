//! The journal on disk: numbered segment files in `<store>/journal/`, each an 8-byte magic
//! and then frames, one per batch the store writer appends (the way Redis's append-only
//! file pairs with its snapshot). sled never sees them: it only lists `snap.*`, `conf`, `db`
//! and `blobs/` in the store's folder.
//!
//! A frame is `[payload length: u32 LE][crc32 of the length and payload: u32 LE][payload]`,
//! the payload being `\n`-terminated AT lines. A crash or power cut can leave the last frame
//! of a segment half written: reading stops at the first frame that is short, empty, too
//! long or fails its checksum, and the caller cuts the segment there, so a torn tail is never
//! read as a shorter, valid-looking batch.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The journal's folder, inside the store's.
pub const DIR: &str = "journal";
/// What every segment starts with (format and version of what follows).
const MAGIC: &[u8; 8] = b"HRDJRNL1";
const FRAME_HEADER: usize = 8;
/// No batch is this big; a length beyond it is damage, not a frame.
const MAX_FRAME: usize = 1 << 30;
const SUFFIX: &str = ".seg";

/// Segment `number`'s file in the journal folder `dir`. Zero-padded, so names sort as
/// numbers do.
pub fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:020}{SUFFIX}"))
}

/// The segments in the journal folder `dir` (created if missing), by number. Other files are
/// left alone.
pub fn list(dir: &Path) -> io::Result<Vec<u64>> {
    std::fs::create_dir_all(dir)?;
    let mut numbers: Vec<u64> = std::fs::read_dir(dir)?
        .filter_map(|entry| {
            let name = entry.ok()?.file_name();
            name.to_str()?.strip_suffix(SUFFIX)?.parse().ok()
        })
        .collect();
    numbers.sort_unstable();
    Ok(numbers)
}

/// fsyncs a folder, so the files created or renamed in it survive a power cut.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The segment the writer appends to.
pub struct Segment {
    file: File,
    /// Bytes in the file (magic included).
    pub bytes: u64,
}

impl Segment {
    /// Creates segment `number` in `dir` and makes its name durable (a strict reply may
    /// soon depend on what is appended to it).
    pub fn create(dir: &Path, number: u64) -> io::Result<Segment> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(segment_path(dir, number))?;
        file.write_all(MAGIC)?;
        sync_dir(dir)?;
        Ok(Segment {
            file,
            bytes: MAGIC.len() as u64,
        })
    }

    /// Appends whole frames (see [`Frames`]). After an error the segment must not be used
    /// again: part of the frames may be in it.
    pub fn append(&mut self, frames: &[u8]) -> io::Result<()> {
        self.file.write_all(frames)?;
        self.bytes += frames.len() as u64;
        Ok(())
    }

    /// A segment every write to which fails (to test failures).
    #[cfg(test)]
    pub fn unwritable(path: &Path) -> io::Result<Segment> {
        Ok(Segment {
            file: File::open(path)?,
            bytes: 0,
        })
    }

    /// fdatasync: what was appended is on disk (and the file's size with it).
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// Frames being built: lines are appended to the open frame, and a frame is closed (its
/// header filled in) when it reaches its size or the batch ends. One buffer, reused.
pub struct Frames {
    buffer: Vec<u8>,
    /// Where the open frame's header starts, if a frame is open.
    open: Option<usize>,
    frame_bytes: usize,
}

impl Frames {
    /// Frames of about `frame_bytes` of payload each (a line is never split).
    pub fn new(frame_bytes: usize) -> Frames {
        Frames {
            buffer: Vec::new(),
            open: None,
            frame_bytes,
        }
    }

    pub fn push_line(&mut self, line: &[u8]) {
        let start = match self.open {
            Some(start) => start,
            None => {
                let start = self.buffer.len();
                self.buffer.extend_from_slice(&[0; FRAME_HEADER]);
                self.open = Some(start);
                start
            }
        };
        self.buffer.extend_from_slice(line);
        self.buffer.push(b'\n');
        if self.buffer.len() - start - FRAME_HEADER >= self.frame_bytes {
            self.close_frame();
        }
    }

    /// Every frame, closed, ready to append (empty when no line was pushed).
    pub fn finish(&mut self) -> &[u8] {
        self.close_frame();
        &self.buffer
    }

    pub fn clear(&mut self) {
        self.buffer.clear();
        self.open = None;
    }

    fn close_frame(&mut self) {
        let Some(start) = self.open.take() else {
            return;
        };
        let length = (self.buffer.len() - start - FRAME_HEADER) as u32;
        let length = length.to_le_bytes();
        let crc = checksum(&length, &self.buffer[start + FRAME_HEADER..]);
        self.buffer[start..start + 4].copy_from_slice(&length);
        self.buffer[start + 4..start + FRAME_HEADER].copy_from_slice(&crc.to_le_bytes());
    }
}

fn checksum(length: &[u8; 4], payload: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(length);
    crc.update(payload);
    crc.finalize()
}

/// Where a segment stops being readable, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Torn {
    /// Bytes of the segment that are whole (what it is cut to).
    pub valid: u64,
    /// Bytes after them.
    pub cut: u64,
    pub why: &'static str,
}

/// Hands each whole frame's payload in `bytes` (a segment's content) to `payload`, in order;
/// returns where the segment stops being whole, if it does before its end.
pub fn frames(bytes: &[u8], mut payload: impl FnMut(&[u8])) -> Option<Torn> {
    let torn = |valid: usize, why| {
        Some(Torn {
            valid: valid as u64,
            cut: (bytes.len() - valid) as u64,
            why,
        })
    };
    if bytes.len() < MAGIC.len() {
        // A segment created just before a crash, with its magic not (wholly) on disk yet.
        return match MAGIC.starts_with(bytes) {
            true if bytes.is_empty() => None,
            true => torn(0, "its header is incomplete"),
            false => torn(0, "it is not a journal segment"),
        };
    }
    if &bytes[..MAGIC.len()] != MAGIC {
        return torn(0, "it is not a journal segment");
    }
    let mut at = MAGIC.len();
    while at < bytes.len() {
        let Some(header) = bytes.get(at..at + FRAME_HEADER) else {
            return torn(at, "a frame header is incomplete");
        };
        let length: [u8; 4] = header[..4].try_into().expect("4 bytes");
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        let size = u32::from_le_bytes(length) as usize;
        if size == 0 || size > MAX_FRAME {
            return torn(at, "a frame's length is damaged");
        }
        let Some(body) = bytes.get(at + FRAME_HEADER..at + FRAME_HEADER + size) else {
            return torn(at, "a frame is incomplete");
        };
        if checksum(&length, body) != crc {
            return torn(at, "a frame fails its checksum");
        }
        payload(body);
        at += FRAME_HEADER + size;
    }
    None
}

/// Cuts segment `path` to its first `valid` bytes, durably.
pub fn cut(path: &Path, valid: u64) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    file.set_len(valid)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payloads(bytes: &[u8]) -> (Vec<String>, Option<Torn>) {
        let mut found = Vec::new();
        let torn = frames(bytes, |p| {
            found.push(String::from_utf8(p.to_vec()).unwrap())
        });
        (found, torn)
    }

    fn segment_with(lines: &[&[&str]]) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        let mut frames = Frames::new(1 << 20);
        for batch in lines {
            frames.clear();
            for line in *batch {
                frames.push_line(line.as_bytes());
            }
            bytes.extend_from_slice(frames.finish());
        }
        bytes
    }

    #[test]
    fn frames_round_trip_and_split_at_their_size() {
        let bytes = segment_with(&[&["a", "b"], &["c"]]);
        assert_eq!(
            payloads(&bytes),
            (vec!["a\nb\n".into(), "c\n".into()], None)
        );
        let mut frames = Frames::new(3);
        for line in ["aa", "bb", "c"] {
            frames.push_line(line.as_bytes());
        }
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(frames.finish());
        assert_eq!(
            payloads(&bytes).0,
            ["aa\n", "bb\n", "c\n"],
            "a frame closes once it holds its size"
        );
        frames.clear();
        assert!(frames.finish().is_empty());
    }

    #[test]
    fn every_torn_or_damaged_tail_is_found_at_its_frame() {
        let whole = segment_with(&[&["first"], &["second line", "third"]]);
        let second = MAGIC.len() + FRAME_HEADER + "first\n".len();
        // Cut anywhere inside the second frame: the first frame alone is read.
        for end in second + 1..whole.len() {
            let (found, torn) = payloads(&whole[..end]);
            assert_eq!(found, ["first\n"], "cut at {end}");
            let torn = torn.expect("torn");
            assert_eq!(torn.valid, second as u64);
            assert_eq!(torn.cut, (end - second) as u64);
        }
        // Any flipped byte of the second frame (header or payload) is caught.
        for at in second..whole.len() {
            let mut damaged = whole.clone();
            damaged[at] ^= 0x20;
            let (found, torn) = payloads(&damaged);
            assert_eq!(found, ["first\n"], "flipped at {at}");
            assert_eq!(torn.expect("torn").valid, second as u64);
        }
        // Zeros where a frame should be (a file extended, its blocks never written).
        let mut zeros = whole[..second].to_vec();
        zeros.extend_from_slice(&[0; 64]);
        assert_eq!(
            payloads(&zeros).1.unwrap().why,
            "a frame's length is damaged"
        );
        // The header.
        assert_eq!(payloads(b""), (vec![], None));
        assert_eq!(payloads(&MAGIC[..3]).1.unwrap().valid, 0);
        assert_eq!(
            payloads(b"not a segment at all").1.unwrap().why,
            "it is not a journal segment"
        );
    }

    #[test]
    fn segments_are_listed_by_number_and_cut_durably() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join(DIR);
        assert!(list(&journal).unwrap().is_empty(), "created empty");
        for n in [10, 2, 1] {
            let mut segment = Segment::create(&journal, n).unwrap();
            let mut frames = Frames::new(1024);
            frames.push_line(b"x");
            segment.append(frames.finish()).unwrap();
            segment.sync().unwrap();
        }
        std::fs::write(journal.join("notes.txt"), "not a segment").unwrap();
        assert_eq!(list(&journal).unwrap(), [1, 2, 10]);
        assert!(Segment::create(&journal, 2).is_err(), "never reused");
        let path = segment_path(&journal, 2);
        cut(&path, MAGIC.len() as u64).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), MAGIC);
    }
}
