//! `backprop serve` (or `train --serve`) as a child process, and a plain HTTP/1.1 client
//! on std's sockets for it and for chromedriver.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running server, killed when dropped.
pub struct Served {
    pub child: Child,
    pub addr: SocketAddr,
    pub url: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary with `args` (which must make it print `serving http://ADDR ...`) in
/// `dir`, and waits for that line.
pub fn start(args: &[&str], dir: &Path) -> Served {
    let mut child = Command::new(env!("CARGO_BIN_EXE_backprop"))
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the binary runs");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("the server says where it serves before it exits")
            .unwrap();
        if let Some(rest) = line.strip_prefix("serving ") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // the rest of its output, read so that the pipe never fills
    std::thread::spawn(move || lines.for_each(drop));
    let addr = url.trim_start_matches("http://").parse().unwrap();
    Served { child, addr, url }
}

/// One request on a connection of its own: (status, body).
pub fn request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    parse_reply(&read_reply(&mut stream))
}

/// A reply's bytes: to its Content-Length where it gives one (a server may keep the
/// connection open all the same), else to the close.
pub fn read_reply(stream: &mut TcpStream) -> Vec<u8> {
    let mut reply = Vec::new();
    let mut buffer = [0u8; 65536];
    loop {
        if let Some(end) = reply.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&reply[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if length.is_some_and(|n| reply.len() >= end + 4 + n) {
                return reply;
            }
        }
        match stream.read(&mut buffer).unwrap() {
            0 => return reply,
            n => reply.extend_from_slice(&buffer[..n]),
        }
    }
}

/// Status and body of a whole HTTP reply (Content-Length, chunked, or to the close).
pub fn parse_reply(reply: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(reply);
    let (head, body) = text.split_once("\r\n\r\n").expect("a header");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        unchunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn unchunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

/// A request whose reply must be JSON: (status, value).
pub fn json(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let (status, text) = request(addr, method, path, body);
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"));
    (status, value)
}

/// Polls `check` every 50 ms for up to `limit`; panics with `what` when it never holds.
pub fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Trains a small model with `backprop train ARGS --save DIR -q`; its last checkpoint.
pub fn train_model(dir: &Path, args: &[&str]) -> String {
    let mut all: Vec<&str> = vec!["train", "-q", "--save"];
    let save = super::path(dir);
    all.push(&save);
    let data = super::repo("data/mnist");
    all.extend(["--data", &data]);
    all.extend(args);
    super::ok(&super::backprop(&all));
    super::path(&dir.join("last.safetensors"))
}
