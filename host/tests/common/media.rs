//! Live video for recorder tests and benchmarks: `ffmpeg` making a live HLS stream from
//! `lavfi` test sources, and a plain HTTP server (Python's `http.server`) serving it.

use super::server::{Server, free_port, wait_until};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Picture size, frame rate and video bitrate of a test stream.
#[derive(Debug, Clone, Copy)]
pub struct Quality {
    pub size: &'static str,
    pub fps: u32,
    pub video_kbps: u32,
}

/// Small and cheap: what the tests record.
pub const SMALL: Quality = Quality {
    size: "160x120",
    fps: 10,
    video_kbps: 200,
};

/// `ffmpeg` writing a live HLS stream (1 s segments, a sliding 6-segment playlist) into
/// `dir/live.m3u8`; killed when dropped.
pub struct LiveHls {
    child: Child,
}

impl LiveHls {
    /// Starts the stream and waits until its playlist lists two segments.
    pub fn start(dir: &Path, q: Quality) -> LiveHls {
        std::fs::create_dir_all(dir).unwrap();
        let log = std::fs::File::create(dir.with_extension("ffmpeg.log")).unwrap();
        let child = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-re"])
            .args(["-f", "lavfi", "-i"])
            .arg(format!("testsrc=size={}:rate={}", q.size, q.fps))
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=22050"])
            .args(["-c:v", "libx264", "-preset", "ultrafast", "-tune"])
            .args(["zerolatency", "-b:v"])
            .arg(format!("{}k", q.video_kbps))
            .arg("-g")
            .arg(q.fps.to_string())
            .args(["-c:a", "aac", "-b:a", "32k"])
            .args(["-f", "hls", "-hls_time", "1", "-hls_list_size", "6"])
            .args(["-hls_flags", "delete_segments+omit_endlist"])
            .arg(dir.join("live.m3u8"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start ffmpeg (Debian package `ffmpeg`)");
        let playlist = dir.join("live.m3u8");
        wait_until("the HLS playlist", Duration::from_secs(30), || {
            std::fs::read_to_string(&playlist)
                .ok()
                .filter(|t| t.matches(".ts").count() >= 2)
        });
        LiveHls { child }
    }
}

impl Drop for LiveHls {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A static HTTP server over `root` on 127.0.0.1 (Python's `http.server`).
pub fn http_server(root: &Path) -> Server {
    let port = free_port();
    Server::start(
        "http.server",
        Path::new("python3"),
        &[
            "-m".into(),
            "http.server".into(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--directory".into(),
            root.display().to_string(),
            port.to_string(),
        ],
        port,
        &root.join("http.log"),
    )
}

/// Seconds of media in a file, as `ffprobe` reads it.
pub fn duration_s(file: &Path) -> f64 {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
        ])
        .arg(file)
        .output()
        .expect("run ffprobe");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("ffprobe on {}: {:?}", file.display(), out))
}

/// (CPU seconds so far, resident bytes) of a process, from `/proc`.
pub fn usage(pid: u32) -> Option<(f64, u64)> {
    // SAFETY: sysconf has no preconditions.
    let ticks = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        t if t > 0 => t as f64,
        _ => 100.0,
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the parenthesised command: field 3 is the state; utime and stime are 14, 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let cpu = (f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / ticks;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())?;
    Some((cpu, rss_kb * 1024))
}
