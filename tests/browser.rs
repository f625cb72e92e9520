//! The page of `backprop serve` in headless Chromium, driven through chromedriver
//! (WebDriver): a digit drawn stroke by stroke with pointer events, every layer's panel
//! drawn, a saliency map, the filters, a training run whose curve grows; a screenshot of
//! each tab into the test's directory (and into BACKPROP_SCREENSHOTS, where set).
//!
//! Skipped without chromium and chromedriver; where BACKPROP_REQUIRE_BROWSER is set (CI
//! installs them) that is a failure instead.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::server::{parse_reply, read_reply, start, train_model, wait_for};
use common::{path, repo, scratch_dir};
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";

fn chromedriver() -> Option<PathBuf> {
    let found = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    if found.is_none() || !Path::new(CHROMIUM).is_file() {
        assert!(
            std::env::var_os("BACKPROP_REQUIRE_BROWSER").is_none(),
            "chromium and chromedriver are required here"
        );
        eprintln!(
            "SKIPPED: no chromium or chromedriver (apt-get install chromium chromium-driver)"
        );
        return None;
    }
    found
}

/// A WebDriver session on a chromedriver of its own, ended and killed when dropped.
struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
}

impl Browser {
    fn start(driver: &Path, profile: &Path) -> Browser {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_for("chromedriver", Duration::from_secs(20), || {
            TcpStream::connect(addr).is_ok()
        });
        let mut browser = Browser {
            driver: child,
            addr,
            session: String::new(),
        };
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--window-size=1400,1100",
            &format!("--user-data-dir={}", path(profile)),
        ];
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args }
        }}});
        let reply = browser.call("POST", "/session", &caps);
        browser.session = reply["sessionId"].as_str().expect("a session").to_string();
        browser
    }

    /// One WebDriver command; its `value`.
    fn call(&self, method: &str, path: &str, body: &Value) -> Value {
        let body = body.to_string();
        let path = if path.starts_with("/session/") || path == "/session" {
            path.to_string()
        } else {
            format!("/session/{}{path}", self.session)
        };
        let mut stream = TcpStream::connect(self.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        use std::io::Write;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .unwrap();
        let (status, text) = parse_reply(&read_reply(&mut stream));
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(status, 200, "{method} {path}: {value}");
        value["value"].clone()
    }

    /// Runs `script` in the page; its return value.
    fn run(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            &json!({ "script": script, "args": [] }),
        )
    }

    fn wait_until(&self, what: &str, script: &str) {
        wait_for(what, Duration::from_secs(60), || {
            self.run(script) == Value::Bool(true)
        });
    }

    fn click(&self, selector: &str) {
        let element = self.call(
            "POST",
            "/element",
            &json!({ "using": "css selector", "value": selector }),
        );
        let id = element
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_string();
        self.call("POST", &format!("/element/{id}/click"), &json!({}));
    }

    /// Pointer strokes on `#pad`, each a list of points relative to its centre.
    fn draw(&self, strokes: &[Vec<(i64, i64)>]) {
        let element = self.call(
            "POST",
            "/element",
            &json!({ "using": "css selector", "value": "#pad" }),
        );
        let mut actions = Vec::new();
        for stroke in strokes {
            let (x, y) = stroke[0];
            actions.push(
                json!({ "type": "pointerMove", "duration": 0, "origin": element, "x": x, "y": y }),
            );
            actions.push(json!({ "type": "pointerDown", "button": 0 }));
            for &(x, y) in &stroke[1..] {
                actions.push(json!({ "type": "pointerMove", "duration": 30, "origin": element, "x": x, "y": y }));
            }
            actions.push(json!({ "type": "pointerUp", "button": 0 }));
        }
        let body = json!({ "actions": [{
            "type": "pointer", "id": "finger", "parameters": { "pointerType": "mouse" }, "actions": actions
        }]});
        self.call("POST", "/actions", &body);
    }

    fn screenshot(&self, file: &Path) {
        let data = self.call("GET", "/screenshot", &json!({}));
        std::fs::write(file, base64(data.as_str().unwrap())).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.call("DELETE", &path, &json!({}))
            }));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Standard base64 (the screenshot's PNG).
fn base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let digits: Vec<u8> = text
        .bytes()
        .filter(|&c| c != b'=' && !c.is_ascii_whitespace())
        .map(value)
        .collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for group in digits.chunks(4) {
        let n = group
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &d)| n | (d as u32) << (18 - 6 * i));
        out.extend(&n.to_be_bytes()[1..group.len()]);
    }
    out
}

/// A "7" in two strokes, as a hand draws it: the bar, then the stem.
fn seven() -> Vec<Vec<(i64, i64)>> {
    let bar: Vec<(i64, i64)> = (0..=8).map(|i| (-60 + 15 * i, -80)).collect();
    let stem: Vec<(i64, i64)> = (0..=10).map(|i| (60 - 7 * i, -80 + 17 * i)).collect();
    vec![bar, stem]
}

#[test]
fn the_page_draws_predicts_shows_filters_and_trains() {
    let Some(driver) = chromedriver() else { return };
    let dir = scratch_dir("browser");
    let shots = std::env::var_os("BACKPROP_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or(dir.clone());
    let cnn = train_model(
        &dir.join("cnn"),
        &[
            "--model",
            "simple-cnn",
            "--optimizer",
            "adam",
            "--iters",
            "300",
        ],
    );
    let data = repo("data/mnist");
    // named as the server's directory sees it, as a user would type it
    assert!(cnn.ends_with("cnn/last.safetensors"));
    let served = start(
        &[
            "serve",
            "cnn/last.safetensors",
            "--port",
            "0",
            "--data",
            &data,
        ],
        &dir,
    );
    let browser = Browser::start(&driver, &dir.join("profile"));
    browser.call("POST", "/url", &json!({ "url": served.url }));
    browser.wait_until(
        "the models",
        "return document.querySelectorAll('#model option').length === 1",
    );

    // Draw: a 7, stroke by stroke; the bars, the input and every layer follow
    browser.draw(&seven());
    browser.wait_until(
        "every layer drawn",
        "const l = [...document.querySelectorAll('.layer')];
         return l.length === 6 && l.every((d) => d.dataset.rendered === 'true') && !!document.getElementById('bars').dataset.top",
    );
    std::thread::sleep(Duration::from_millis(500)); // the last strokes' request
    let top = browser.run("return document.getElementById('bars').dataset.top");
    assert_eq!(top, "7", "the drawn 7 read as {top}");
    let inked = browser.run(
        "const d = document.getElementById('input').getContext('2d').getImageData(0, 0, 28, 28).data;
         let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] > 128) n++; return n",
    );
    assert!(
        inked.as_u64().unwrap() > 30,
        "the prepared input shows the ink: {inked}"
    );
    browser.click("#bars .bar[data-class='7']");
    browser.wait_until(
        "the saliency of 7",
        "return document.getElementById('saliency').dataset.class === '7'",
    );
    browser.screenshot(&shots.join("serve-draw.png"));

    // a test digit, sent as it is
    browser.click("#random");
    browser.wait_until(
        "a test digit",
        "return document.getElementById('source').textContent.startsWith('Test image')",
    );

    // Filters: SimpleConvNet's 30 of 5x5
    browser.click(".tab[data-tab='filters']");
    browser.wait_until(
        "30 filters",
        "return document.querySelectorAll('#filter-grid canvas').length === 30",
    );
    browser.screenshot(&shots.join("serve-filters.png"));

    // Train: a short run; the loss curve gains points while it trains, then it is offered
    browser.click(".tab[data-tab='train']");
    browser.run(
        "const f = document.getElementById('train-form');
         f.model.value = 'simple-cnn'; f.optimizer.value = 'adam'; f.epochs.value = '1'; return true",
    );
    browser.click("#start");
    browser.wait_until(
        "the curve's first points",
        "return Number(document.getElementById('loss-chart').dataset.points) > 0",
    );
    let early = browser.run("return Number(document.getElementById('loss-chart').dataset.points)");
    browser.wait_until(
        "the run's end",
        "return document.getElementById('run-status').dataset.state === 'finished'",
    );
    let late = browser.run("return Number(document.getElementById('loss-chart').dataset.points)");
    assert!(
        late.as_u64() > early.as_u64(),
        "the curve gained points: {early} then {late}"
    );
    browser.wait_until(
        "the epoch's accuracy",
        "return Number(document.getElementById('accuracy-chart').dataset.points) === 1",
    );
    browser.screenshot(&shots.join("serve-train.png"));
    browser.click("#open-checkpoint");
    browser.wait_until(
        "the run's checkpoint in Draw",
        "return !document.getElementById('draw').hidden && document.getElementById('model').value.endsWith('last.safetensors')",
    );
}
