//! A FIFO of chat lines that spills to disk: the first `memory_lines` lines wait in memory,
//! later ones are appended to an unnamed file (up to `disk_bytes`), and lines come out in
//! the order they went in.
//!
//! Why: the live Twitch source must keep reading its connections while the pipeline is
//! slower than chat (a burst, a Kafka or MongoDB outage downstream). A connection that is
//! not read stops answering the server's and `twitch-irc`'s PINGs and is recycled within
//! seconds, and whatever Twitch had queued for it is lost. Memory is the wrong place for a
//! minutes-long backlog (10,000 channels at 20,000 msg/s is ~10 MB/s), so it goes to disk,
//! and only when the disk allowance is used up does [`Spool::push`] wait (backpressure, as a
//! plain bounded queue would from the start).
//!
//! The spill is a queue of segment files (64 MiB at most each), created in `dir` and
//! unlinked at once: they take no name and need no clean-up after a crash. A segment is
//! closed (its disk space freed) as soon as it has been read, so the disk used stays
//! within `disk_bytes` plus one segment however long the pipeline stays behind. Lines
//! never contain `\n` (IRC lines are split on it), so segments are newline-delimited.
//!
//! An I/O error (the directory unusable, the disk failing) fails the spool for good: every
//! later call returns the error, rather than hand out lines from a file whose offsets may
//! no longer match what was written. [`Spool::probe`] finds an unusable directory at
//! startup, not during the first backlog.
//!
//! File I/O happens under the lock on the caller's task: appends go through a 256 KiB
//! buffer and reads are 256 KiB `pread`s, page-cache speed, so it does not stall the
//! runtime noticeably — measured in `benches/twitch_scale.rs`.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tokio::sync::Notify;

const CHUNK: usize = 256 * 1024;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
/// Largest segment file: what the spill may use on disk beyond `disk_bytes`.
const SEGMENT_BYTES: u64 = 64 << 20;

/// Why a spill file could not be used.
#[derive(Debug, Clone, thiserror::Error)]
#[error("spill file in {dir:?}: {source}")]
pub struct SpoolError {
    dir: PathBuf,
    source: std::sync::Arc<std::io::Error>,
}

/// Counters a spool keeps for its owner's metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SpoolLevel {
    /// Lines waiting in memory.
    pub memory_lines: usize,
    /// Lines waiting in the spill file.
    pub disk_lines: u64,
    /// Bytes of the spill file not yet read back.
    pub disk_bytes: u64,
}

/// One spill file.
struct Segment {
    writer: BufWriter<File>,
    reader: File,
    /// Bytes appended (including what is still in `writer`'s buffer).
    written: u64,
    /// Bytes handed out.
    read: u64,
    /// Lines appended and not yet handed out.
    lines: u64,
    /// Read-ahead: complete lines from `read` on.
    ahead: VecDeque<String>,
    /// Bytes of the file already in `ahead` or passed (`read` + bytes in `ahead`).
    fetched: u64,
}

impl Segment {
    /// Reads the next chunk into `ahead`; false when nothing complete is left.
    fn fetch(&mut self) -> std::io::Result<bool> {
        if self.fetched >= self.written {
            return Ok(false);
        }
        self.writer.flush()?;
        let want = usize::try_from(self.written - self.fetched)
            .unwrap_or(CHUNK)
            .min(CHUNK);
        let mut buf = vec![0u8; want];
        let n = self.reader.read_at(&mut buf, self.fetched)?;
        buf.truncate(n);
        // Only whole lines: a chunk boundary may cut the last one.
        let Some(end) = buf.iter().rposition(|b| *b == b'\n') else {
            // A line longer than a chunk: read until its end.
            let mut line = buf;
            let mut at = self.fetched + n as u64;
            loop {
                let mut more = vec![0u8; CHUNK];
                let m = self.reader.read_at(&mut more, at)?;
                if m == 0 {
                    return Ok(false);
                }
                more.truncate(m);
                at += m as u64;
                if let Some(i) = more.iter().position(|b| *b == b'\n') {
                    line.extend_from_slice(&more[..i]);
                    self.fetched += line.len() as u64 + 1;
                    self.ahead
                        .push_back(String::from_utf8_lossy(&line).into_owned());
                    return Ok(true);
                }
                line.extend_from_slice(&more);
            }
        };
        for l in buf[..end].split(|b| *b == b'\n') {
            // Lines went in as `String`s, so they come out as valid UTF-8.
            self.ahead
                .push_back(String::from_utf8_lossy(l).into_owned());
        }
        self.fetched += end as u64 + 1;
        Ok(true)
    }
}

/// The lines on disk: segments, oldest first; appends go to the last one.
struct Spill {
    segments: VecDeque<Segment>,
    /// Lines in all segments, not yet handed out.
    lines: u64,
    /// Bytes in all segments, not yet handed out.
    unread: u64,
}

struct State {
    memory: VecDeque<String>,
    /// Set while lines are on disk: new lines go there too, so the order holds.
    spill: Option<Spill>,
    /// The first I/O error; the spool refuses everything after it.
    failed: Option<SpoolError>,
    /// When the spool last went from empty to not empty (Unix ms): every waiting line
    /// arrived at or after it.
    since_ms: Option<i64>,
}

/// See the module documentation.
pub struct Spool {
    state: Mutex<State>,
    /// Signalled when a line is pushed (for `pop`) and when one is taken (for a `push`
    /// waiting for room).
    pushed: Notify,
    taken: Notify,
    memory_lines: usize,
    disk_bytes: u64,
    segment_bytes: u64,
    dir: PathBuf,
}

impl Spool {
    /// A spool holding `memory_lines` in memory and then up to `disk_bytes` in a file in
    /// `dir` (0: no file, a plain bounded queue).
    pub fn new(memory_lines: usize, disk_bytes: u64, dir: &Path) -> Spool {
        Spool {
            state: Mutex::new(State {
                memory: VecDeque::new(),
                spill: None,
                failed: None,
                since_ms: None,
            }),
            pushed: Notify::new(),
            taken: Notify::new(),
            memory_lines: memory_lines.max(1),
            disk_bytes,
            segment_bytes: SEGMENT_BYTES,
            dir: dir.to_owned(),
        }
    }

    /// Checks that a spill file can be made in the directory (when spilling is on).
    pub fn probe(&self) -> Result<(), SpoolError> {
        if self.disk_bytes > 0 {
            self.open_segment()?;
        }
        Ok(())
    }

    fn error(&self, source: std::io::Error) -> SpoolError {
        SpoolError {
            dir: self.dir.clone(),
            source: std::sync::Arc::new(source),
        }
    }

    fn open_segment(&self) -> Result<Segment, SpoolError> {
        let err = |source| self.error(source);
        std::fs::create_dir_all(&self.dir).map_err(err)?;
        let path = self.dir.join(format!(
            ".streamtap-spool-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(err)?;
        // Unnamed from now on: nothing to clean up, whatever happens to this process.
        std::fs::remove_file(&path).map_err(err)?;
        let reader = file.try_clone().map_err(err)?;
        Ok(Segment {
            writer: BufWriter::with_capacity(CHUNK, file),
            reader,
            written: 0,
            read: 0,
            lines: 0,
            ahead: VecDeque::new(),
            fetched: 0,
        })
    }

    /// Adds `line` at the back without waiting: `Ok(None)` when taken, `Ok(Some(line))`
    /// when memory and the disk allowance are both full.
    pub fn try_push(&self, line: String) -> Result<Option<String>, SpoolError> {
        let mut st = self.state.lock().expect("spool lock");
        if let Some(e) = &st.failed {
            return Err(e.clone());
        }
        let res = self.push_locked(&mut st, line);
        if let Err(e) = &res {
            st.failed = Some(e.clone());
        }
        drop(st);
        if matches!(res, Ok(None)) {
            self.pushed.notify_one();
        }
        res
    }

    fn push_locked(&self, st: &mut State, line: String) -> Result<Option<String>, SpoolError> {
        if st.memory.is_empty() && st.spill.is_none() {
            st.since_ms = Some(now_ms());
        }
        if st.spill.is_none() {
            if st.memory.len() < self.memory_lines {
                st.memory.push_back(line);
                return Ok(None);
            }
            if self.disk_bytes == 0 {
                return Ok(Some(line));
            }
        }
        let len = line.len() as u64 + 1;
        if st.spill.as_ref().map_or(0, |s| s.unread) + len > self.disk_bytes {
            return Ok(Some(line));
        }
        let spill = match &mut st.spill {
            Some(s) => s,
            none => none.insert(Spill {
                segments: VecDeque::new(),
                lines: 0,
                unread: 0,
            }),
        };
        if spill
            .segments
            .back()
            .is_none_or(|seg| seg.written >= self.segment_bytes)
        {
            spill.segments.push_back(self.open_segment()?);
        }
        let seg = spill.segments.back_mut().expect("a segment");
        seg.writer
            .write_all(line.as_bytes())
            .and_then(|()| seg.writer.write_all(b"\n"))
            .map_err(|e| self.error(e))?;
        seg.written += len;
        seg.lines += 1;
        spill.lines += 1;
        spill.unread += len;
        Ok(None)
    }

    /// Adds `line` at the back, waiting while memory and the disk allowance are full.
    pub async fn push(&self, mut line: String) -> Result<(), SpoolError> {
        loop {
            let room = self.taken.notified();
            tokio::pin!(room);
            // Registered before trying, so a `pop` between the try and the wait wakes us.
            room.as_mut().enable();
            match self.try_push(line)? {
                None => return Ok(()),
                Some(back) => line = back,
            }
            room.await;
        }
    }

    /// Takes the line at the front without waiting.
    pub fn try_pop(&self) -> Result<Option<String>, SpoolError> {
        let mut st = self.state.lock().expect("spool lock");
        if let Some(e) = &st.failed {
            return Err(e.clone());
        }
        let res = self.pop_locked(&mut st);
        if let Err(e) = &res {
            st.failed = Some(e.clone());
        }
        drop(st);
        if matches!(res, Ok(Some(_))) {
            self.taken.notify_waiters();
        }
        res
    }

    fn pop_locked(&self, st: &mut State) -> Result<Option<String>, SpoolError> {
        if let Some(l) = st.memory.pop_front() {
            if st.memory.is_empty() && st.spill.is_none() {
                st.since_ms = None;
            }
            return Ok(Some(l));
        }
        let Some(spill) = st.spill.as_mut() else {
            return Ok(None);
        };
        let line = loop {
            let seg = spill.segments.front_mut().expect("a spill has a segment");
            if seg.ahead.is_empty() {
                seg.fetch().map_err(|e| self.error(e))?;
            }
            if let Some(l) = seg.ahead.pop_front() {
                let len = l.len() as u64 + 1;
                seg.read += len;
                seg.lines -= 1;
                spill.lines -= 1;
                spill.unread -= len;
                break Some(l);
            }
            if spill.segments.len() == 1 {
                break None;
            }
            // Read to its end and no longer written: close it, freeing its disk space.
            spill.segments.pop_front();
        };
        if spill.lines == 0 {
            // Drained: drop the last file; memory takes lines again.
            st.spill = None;
            st.since_ms = None;
        }
        Ok(line)
    }

    /// Takes the line at the front, waiting for one.
    pub async fn pop(&self) -> Result<String, SpoolError> {
        loop {
            let more = self.pushed.notified();
            tokio::pin!(more);
            more.as_mut().enable();
            if let Some(l) = self.try_pop()? {
                return Ok(l);
            }
            more.await;
        }
    }

    /// When the oldest waiting line arrived, at the earliest (Unix ms); `None` when empty.
    pub fn waiting_since_ms(&self) -> Option<i64> {
        self.state.lock().expect("spool lock").since_ms
    }

    /// How much is waiting, in memory and on disk.
    pub fn level(&self) -> SpoolLevel {
        let st = self.state.lock().expect("spool lock");
        let (disk_lines, disk_bytes) = st.spill.as_ref().map_or((0, 0), |s| (s.lines, s.unread));
        SpoolLevel {
            memory_lines: st.memory.len(),
            disk_lines,
            disk_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(i: usize) -> String {
        // Varied lengths, some longer than a read chunk, and multi-byte characters.
        let body = match i % 7 {
            0 => "é".repeat(CHUNK / 2 + i % 13),
            _ => "x".repeat(i % 300),
        };
        format!("{i}:{body}")
    }

    #[test]
    fn order_holds_through_memory_and_disk_and_the_file_goes_when_drained() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::new(10, 64 << 20, dir.path());
        // Small segments, so lines also cross from one file to the next.
        s.segment_bytes = 300_000;
        let mut next_out = 0;
        let mut next_in = 0;
        // Interleave pushes and pops so lines cross memory → disk → memory repeatedly.
        for round in 0..20 {
            for _ in 0..(round * 7 % 40 + 5) {
                assert_eq!(s.try_push(line(next_in)).unwrap(), None);
                next_in += 1;
            }
            for _ in 0..(round * 5 % 30 + 3) {
                match s.try_pop().unwrap() {
                    Some(l) => {
                        assert_eq!(l, line(next_out));
                        next_out += 1;
                    }
                    None => break,
                }
            }
        }
        assert!(s.level().disk_lines > 0, "{:?}", s.level());
        while let Some(l) = s.try_pop().unwrap() {
            assert_eq!(l, line(next_out));
            next_out += 1;
        }
        assert_eq!(next_out, next_in);
        assert_eq!(s.level(), SpoolLevel::default());
        // The spill file was unlinked when created: nothing left in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn full_memory_and_disk_hand_the_line_back() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::new(2, 10, dir.path());
        assert_eq!(s.try_push("a".into()).unwrap(), None);
        assert_eq!(s.try_push("b".into()).unwrap(), None);
        assert_eq!(s.try_push("cccc".into()).unwrap(), None); // 5 bytes on disk
        assert_eq!(s.try_push("dddd".into()).unwrap(), None); // 10
        assert_eq!(s.try_push("e".into()).unwrap(), Some("e".into()));
        assert_eq!(
            s.level(),
            SpoolLevel {
                memory_lines: 2,
                disk_lines: 2,
                disk_bytes: 10
            }
        );
        let none = Spool::new(1, 0, dir.path());
        assert_eq!(none.try_push("a".into()).unwrap(), None);
        assert_eq!(none.try_push("b".into()).unwrap(), Some("b".into()));
    }

    #[test]
    fn disk_use_stays_bounded_while_the_reader_stays_behind() {
        let short = |i: usize| format!("{i}:{}", "x".repeat(i % 50));
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::new(1, 10_000, dir.path());
        s.segment_bytes = 1_000;
        let mut next_in = 0;
        while s.try_push(short(next_in)).unwrap().is_none() {
            next_in += 1;
        }
        // Full, then for a long time one line out for each line in: a single file that
        // only grew would reach ~1 MB; the segments stay within the allowance plus one.
        for next_out in 0..20_000 {
            assert_eq!(s.try_pop().unwrap().unwrap(), short(next_out));
            // Refused only while full (a longer line than the one taken): tried again.
            if s.try_push(short(next_in)).unwrap().is_none() {
                next_in += 1;
            }
            let st = s.state.lock().unwrap();
            let on_disk: u64 = st
                .spill
                .as_ref()
                .map_or(0, |sp| sp.segments.iter().map(|g| g.written).sum());
            assert!(on_disk <= 10_000 + 1_000 + 60, "{on_disk} bytes on disk");
        }
    }

    #[test]
    fn an_unusable_directory_is_an_error_naming_it_at_the_probe_and_after() {
        let s = Spool::new(1, 1 << 20, Path::new("/proc/no-such-dir"));
        let e = s.probe().unwrap_err().to_string();
        assert!(e.contains("/proc/no-such-dir"), "{e}");
        s.try_push("a".into()).unwrap();
        let e = s.try_push("b".into()).unwrap_err().to_string();
        assert!(e.contains("/proc/no-such-dir"), "{e}");
        // Failed for good: the line in memory is not handed out from a broken spool.
        assert!(s.try_pop().is_err());
        assert!(
            Spool::new(1, 0, Path::new("/proc/no-such-dir"))
                .probe()
                .is_ok()
        );
    }

    #[tokio::test]
    async fn a_waiting_push_resumes_when_a_line_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(Spool::new(1, 0, dir.path()));
        s.push("a".into()).await.unwrap();
        let s2 = s.clone();
        let pusher = tokio::spawn(async move { s2.push("b".into()).await });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!pusher.is_finished());
        assert_eq!(s.pop().await.unwrap(), "a");
        pusher.await.unwrap().unwrap();
        assert_eq!(s.pop().await.unwrap(), "b");
    }
}
