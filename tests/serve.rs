//! `backprop serve` over HTTP: every endpoint, every kind of bad request (each a 4xx with a
//! one-line message, the server answering on after it), a load test, training runs from the
//! page and from `train --serve`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::server::{Served, json, start, train_model, wait_for};
use common::{backprop, ok, path, repo, scratch_dir};
use serde_json::Value;

/// A TwoLayerNet and a SimpleConvNet, trained once for all the tests here.
fn models() -> &'static (String, String) {
    static MODELS: OnceLock<(String, String)> = OnceLock::new();
    MODELS.get_or_init(|| {
        let dir = scratch_dir("serve-models");
        let two = train_model(&dir.join("two"), &["--iters", "400"]);
        let cnn = train_model(
            &dir.join("cnn"),
            &[
                "--model",
                "simple-cnn",
                "--optimizer",
                "adam",
                "--iters",
                "150",
            ],
        );
        (two, cnn)
    })
}

fn serve(name: &str) -> (Served, std::path::PathBuf) {
    let (two, cnn) = models();
    let dir = scratch_dir(name);
    let data = repo("data/mnist");
    let served = start(&["serve", two, cnn, "--port", "0", "--data", &data], &dir);
    (served, dir)
}

fn query(model: &str) -> String {
    model.replace('/', "%2F")
}

/// A PGM (P5) of test image `index`, dark ink on light, 3x its size: a file as a user has.
fn pgm_of(served: &Served, index: usize) -> (Vec<u8>, usize) {
    let (status, d) = json(
        served.addr,
        "GET",
        &format!("/api/test-digit?index={index}"),
        b"",
    );
    assert_eq!(status, 200, "{d}");
    let pixels: Vec<f64> = d["pixels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let mut pgm = b"P5\n84 84\n255\n".to_vec();
    for y in 0..84 {
        for x in 0..84 {
            pgm.push((255.0 * (1.0 - pixels[(y / 3) * 28 + x / 3])).round() as u8);
        }
    }
    (pgm, d["label"].as_u64().unwrap() as usize)
}

#[test]
fn models_predictions_layers_saliency_and_filters() {
    let (served, dir) = serve("serve-endpoints");
    let (two, cnn) = models();
    let (status, list) = json(served.addr, "GET", "/api/models", b"");
    assert_eq!(status, 200);
    let names: Vec<&str> = list["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, [two.as_str(), cnn.as_str()]);
    let layers: Vec<&str> = list["models"][1]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        layers,
        ["Conv1", "Relu1", "Pool1", "Affine1", "Relu2", "Affine2"]
    );
    assert_eq!(
        list["models"][1]["layers"][2]["shape"],
        serde_json::json!([30, 12, 12])
    );
    assert_eq!(list["test_set"]["images"], 10000);

    // an image file is prepared as `backprop predict` prepares it: the same probabilities
    let (pgm, label) = pgm_of(&served, 0);
    let file = dir.join("digit.pgm");
    std::fs::write(&file, &pgm).unwrap();
    let cli = ok(&backprop(&["predict", cnn, &path(&file)]));
    let (status, p) = json(
        served.addr,
        "POST",
        &format!("/api/predict?model={}", query(cnn)),
        &pgm,
    );
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["top"][0]["class"], label);
    let top: Vec<String> = p["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            format!(
                "{} ({:.1}%)",
                t["name"].as_str().unwrap(),
                100.0 * t["probability"].as_f64().unwrap()
            )
        })
        .collect();
    assert_eq!(
        cli.trim(),
        format!("{}: {}", file.display(), top.join(", "))
    );
    assert_eq!(p["input"]["pixels"].as_array().unwrap().len(), 784);

    // every layer's output, the last the scores the probabilities come from
    let (status, a) = json(
        served.addr,
        "POST",
        &format!("/api/activations?model={}&test=0", query(cnn)),
        b"",
    );
    assert_eq!(status, 200, "{a}");
    let outputs = a["layers"].as_array().unwrap();
    assert_eq!(outputs.len(), 6);
    assert_eq!(outputs[0]["shape"], serde_json::json!([30, 24, 24]));
    assert_eq!(outputs[0]["values"].as_array().unwrap().len(), 30 * 24 * 24);
    let scores: Vec<f64> = outputs[5]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let max = scores.iter().cloned().fold(f64::MIN, f64::max);
    let sum: f64 = scores.iter().map(|s| (s - max).exp()).sum();
    for (k, s) in scores.iter().enumerate() {
        let p = a["probabilities"][k].as_f64().unwrap();
        assert!(((s - max).exp() / sum - p).abs() < 1e-5);
    }

    // the saliency: the gradient of the class's score, one value a pixel; moving the input
    // along it raises the score
    let path7 = format!("/api/saliency?model={}&test=0&class={label}", query(cnn));
    let (status, s) = json(served.addr, "POST", &path7, b"");
    assert_eq!(status, 200, "{s}");
    let g: Vec<f64> = s["gradient"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(g.len(), 784);
    let x: Vec<f64> = s["input"]["pixels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let norm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
    let moved: Vec<f64> = x
        .iter()
        .zip(&g)
        .map(|(x, g)| (x + 0.5 * g / norm).clamp(0.0, 1.0))
        .collect();
    let body = serde_json::json!({ "pixels": moved }).to_string();
    let (_, m) = json(
        served.addr,
        "POST",
        &format!("/api/activations?model={}", query(cnn)),
        body.as_bytes(),
    );
    let moved_score = m["layers"][5]["values"][label].as_f64().unwrap();
    assert!(
        moved_score > s["score"].as_f64().unwrap(),
        "{moved_score} vs {}",
        s["score"]
    );

    // the first layer's weights: 30 filters of 1x5x5; TwoLayerNet's 50 columns of 784
    let (status, f) = json(
        served.addr,
        "GET",
        &format!("/api/filters?model={}", query(cnn)),
        b"",
    );
    assert_eq!(
        (status, &f["shape"]),
        (200, &serde_json::json!([30, 1, 5, 5]))
    );
    assert_eq!(f["values"].as_array().unwrap().len(), 750);
    let (_, f) = json(served.addr, "GET", "/api/filters", b"");
    assert_eq!(f["shape"], serde_json::json!([50, 1, 28, 28]));

    // the page and its files
    for (file, kind) in [
        ("/", "text/html"),
        ("/app.js", "javascript"),
        ("/style.css", "text/css"),
    ] {
        let mut stream = TcpStream::connect(served.addr).unwrap();
        write!(
            stream,
            "GET {file} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{file}: {reply:.200}");
        assert!(reply.to_ascii_lowercase().contains(kind), "{file}");
    }
}

/// Each bad request gets its status and a one-line `{"error": ...}`; the server answers on.
#[test]
fn bad_requests_are_refused_and_the_server_goes_on() {
    let (served, _dir) = serve("serve-bad");
    let big = vec![b'x'; (1 << 20) + 1];
    let cases: Vec<(&str, String, Vec<u8>, u16, &str)> = vec![
        (
            "POST",
            "/api/predict?model=nope".into(),
            vec![],
            404,
            "no model named",
        ),
        (
            "POST",
            "/api/predict".into(),
            b"{\"pixels\": [0.5,".to_vec(),
            400,
            "malformed JSON",
        ),
        (
            "POST",
            "/api/predict".into(),
            b"{\"pixels\": [0.5, 0.5]}".to_vec(),
            400,
            "2 values, the model takes 1x28x28 = 784",
        ),
        (
            "POST",
            "/api/predict".into(),
            b"{\"pixels\": 3}".to_vec(),
            400,
            "malformed JSON",
        ),
        (
            "POST",
            "/api/predict".into(),
            b"\x89PNG\r\n\x1a\n truncated".to_vec(),
            400,
            "unreadable PNG",
        ),
        (
            "POST",
            "/api/predict".into(),
            b"P5\n0 0\n255\n".to_vec(),
            400,
            "uploaded image",
        ),
        (
            "POST",
            "/api/predict".into(),
            b"hello".to_vec(),
            400,
            "not a PNG, JPEG or PGM",
        ),
        ("POST", "/api/predict".into(), vec![], 400, "no image"),
        (
            "POST",
            "/api/predict".into(),
            big,
            413,
            "over the limit of 1048576 bytes",
        ),
        (
            "POST",
            "/api/predict?test=10000".into(),
            vec![],
            404,
            "no test image 10000",
        ),
        (
            "POST",
            "/api/predict?test=-1".into(),
            vec![],
            400,
            "not a whole number",
        ),
        (
            "POST",
            "/api/saliency?test=0".into(),
            vec![],
            400,
            "needs class=K",
        ),
        (
            "POST",
            "/api/saliency?test=0&class=10".into(),
            vec![],
            400,
            "classes 0 to 9",
        ),
        (
            "GET",
            "/api/predict".into(),
            vec![],
            405,
            "GET is not answered",
        ),
        ("GET", "/nothing".into(), vec![], 404, "nothing at /nothing"),
        (
            "POST",
            "/api/train".into(),
            b"{\"epochs\": \"many\"}".to_vec(),
            400,
            "the run's settings",
        ),
        (
            "POST",
            "/api/train".into(),
            b"{\"model\": \"resnet\"}".to_vec(),
            400,
            "is not two-layer",
        ),
        (
            "POST",
            "/api/train".into(),
            b"{\"lr\": -1}".to_vec(),
            400,
            "--lr must be a positive number",
        ),
        (
            "POST",
            "/api/train".into(),
            b"{\"layers\": \"/etc/passwd\"}".to_vec(),
            400,
            "server's to choose",
        ),
        (
            "POST",
            "/api/train/stop".into(),
            vec![],
            409,
            "no training run is going",
        ),
    ];
    for (method, path, body, status, says) in &cases {
        let (got, reply) = json(served.addr, method, path, body);
        let error = reply["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{path}: {reply}"));
        assert_eq!(got, *status, "{method} {path}: {error}");
        assert!(
            error.contains(says) && !error.contains('\n'),
            "{method} {path}: {error}"
        );
    }
    // a client that sends half a body and goes, one that leaves an event stream, one that
    // sends nothing at all
    let mut half = TcpStream::connect(served.addr).unwrap();
    write!(
        half,
        "POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\nP5\n28"
    )
    .unwrap();
    drop(half);
    let mut stream = TcpStream::connect(served.addr).unwrap();
    write!(stream, "GET /api/train/events HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut first = [0u8; 64];
    stream.read_exact(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first).contains("text/event-stream"));
    drop(stream);
    drop(TcpStream::connect(served.addr).unwrap());
    let (status, _) = json(served.addr, "POST", "/api/predict?test=1", b"");
    assert_eq!(status, 200);
    // another site's page may not post here; this server's own page may
    let from = |origin: &str| {
        let mut stream = TcpStream::connect(served.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let body = r#"{"model": "x"}"#;
        write!(
            stream,
            "POST /api/train HTTP/1.1\r\nHost: {}\r\nOrigin: {origin}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            served.addr,
            body.len()
        )
        .unwrap();
        common::server::parse_reply(&common::server::read_reply(&mut stream))
    };
    let (status, reply) = from("http://elsewhere.example");
    assert_eq!(status, 403, "{reply}");
    assert!(
        reply.contains("http://elsewhere.example is refused"),
        "{reply}"
    );
    let (status, reply) = from(&format!("http://{}", served.addr));
    assert_eq!(status, 400, "{reply}"); // past the origin check, to the settings' own error
    assert!(reply.contains("is not two-layer"), "{reply}");
}

/// 2000 predictions from 8 threads at once: every one answered, and right.
#[test]
fn load_of_2000_predictions_from_8_threads() {
    let (served, _dir) = serve("serve-load");
    let (_, cnn) = models();
    let addr = served.addr;
    let path = format!("/api/predict?model={}", query(cnn));
    let start = Instant::now();
    let mut latencies: Vec<f64> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..8)
            .map(|t| {
                let path = &path;
                s.spawn(move || {
                    (0..250)
                        .map(|i| {
                            let at = Instant::now();
                            let (status, p) =
                                json(addr, "POST", &format!("{path}&test={}", t * 250 + i), b"");
                            assert_eq!(status, 200, "{p}");
                            assert!(p["top"][0]["probability"].as_f64().unwrap() > 0.0);
                            at.elapsed().as_secs_f64() * 1e3
                        })
                        .collect::<Vec<f64>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let wall = start.elapsed().as_secs_f64();
    assert_eq!(latencies.len(), 2000);
    latencies.sort_by(f64::total_cmp);
    eprintln!(
        "2000 SimpleConvNet predictions from 8 threads in {wall:.2} s: p50 {:.2} ms, p99 {:.2} ms (client side, loopback)",
        latencies[1000], latencies[1980]
    );
}

fn run_status(served: &Served) -> Value {
    json(served.addr, "GET", "/api/train", b"").1
}

fn finished(served: &Served) -> Value {
    let mut last = Value::Null;
    wait_for("the run to end", Duration::from_secs(120), || {
        last = run_status(served);
        last["status"]["state"] != "running"
    });
    last
}

/// A run started from the page: one at a time, its curve streamed, its checkpoint offered;
/// Stop stops it; a run that diverges says so and keeps the last epoch's checkpoint.
#[test]
fn training_runs_from_the_page() {
    let (served, dir) = serve("serve-train");
    let mut events = TcpStream::connect(served.addr).unwrap();
    write!(events, "GET /api/train/events HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    events
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();

    let settings = br#"{"model": "two-layer", "optimizer": "sgd", "epochs": 2, "seed": 3}"#;
    let (status, reply) = json(served.addr, "POST", "/api/train", settings);
    assert_eq!((status, &reply["run"]), (202, &Value::from(1)));
    let (status, busy) = json(served.addr, "POST", "/api/train", settings);
    assert_eq!(status, 409, "{busy}");
    let end = finished(&served);
    assert_eq!(end["status"]["state"], "finished", "{}", end["status"]);
    assert_eq!(end["epochs"].as_array().unwrap().len(), 2);
    assert!(end["epochs"][1]["test_accuracy"].as_f64().unwrap() > 0.85);
    let points = end["points"].as_array().unwrap();
    assert_eq!(points.len(), 1200);
    assert!(points[1199][1].as_f64().unwrap() < points[0][1].as_f64().unwrap());
    let checkpoint = end["status"]["checkpoint"].as_str().unwrap().to_string();
    assert!(dir.join(&checkpoint).is_file(), "{checkpoint}");
    let (_, list) = json(served.addr, "GET", "/api/models", b"");
    assert!(
        list["models"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == checkpoint.as_str())
    );
    let (status, _) = json(
        served.addr,
        "POST",
        &format!("/api/predict?test=0&model={}", query(&checkpoint)),
        b"",
    );
    assert_eq!(status, 200);

    // the stream carried the run: its points, its epochs and its end
    let mut seen = String::new();
    let mut buffer = [0u8; 65536];
    while !seen.contains("\"state\":\"finished\"") {
        let n = events.read(&mut buffer).unwrap();
        assert!(n > 0, "the stream ended");
        seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
    }
    assert!(seen.contains("event: run\ndata: {") && seen.contains("\"test_accuracy\""));

    // Stop: a long run stopped early, its checkpoint kept
    let long = br#"{"model": "simple-cnn", "optimizer": "adam", "epochs": 5}"#;
    assert_eq!(json(served.addr, "POST", "/api/train", long).0, 202);
    wait_for("updates", Duration::from_secs(60), || {
        run_status(&served)["status"]["iteration"].as_u64().unwrap() > 5
    });
    assert_eq!(json(served.addr, "POST", "/api/train/stop", b"").0, 200);
    let end = finished(&served);
    assert_eq!(end["status"]["state"], "stopped", "{}", end["status"]);
    assert!(
        dir.join(end["status"]["checkpoint"].as_str().unwrap())
            .is_file()
    );

    // divergence in the second epoch: the first epoch's checkpoint stays
    let diverging =
        br#"{"model": "two-layer", "epochs": 3, "lr": 0.1, "lr-schedule": "step:1:1e12"}"#;
    assert_eq!(json(served.addr, "POST", "/api/train", diverging).0, 202);
    let end = finished(&served);
    assert_eq!(end["status"]["state"], "diverged", "{}", end["status"]);
    let message = end["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("diverged") && message.contains("checkpoint is kept"),
        "{message}"
    );
    let kept = end["status"]["checkpoint"].as_str().unwrap();
    assert!(
        ok(&backprop(&[
            "eval",
            &path(&dir.join(kept)),
            "--data",
            &repo("data/mnist")
        ]))
        .contains("accuracy")
    );
}

/// `backprop train --serve`: the page follows the command line's run, and offers its
/// checkpoint when it ends.
#[test]
fn train_serve_publishes_the_command_line_run() {
    let dir = scratch_dir("serve-train-cli");
    let save = path(&dir.join("run"));
    let data = repo("data/mnist");
    let served = start(
        &[
            "train", "--serve", "0", "-q", "--epochs", "2", "--save", &save, "--data", &data,
        ],
        Path::new(&dir),
    );
    let end = finished(&served);
    assert_eq!(end["status"]["state"], "finished", "{}", end["status"]);
    assert_eq!(end["status"]["started_by"], "command line");
    assert_eq!(end["epochs"].as_array().unwrap().len(), 2);
    let (status, busy) = json(served.addr, "POST", "/api/train", b"{}");
    assert_eq!(
        status, 202,
        "a new run from the page once this one ended: {busy}"
    );
    let _ = finished(&served);
    let (_, list) = json(served.addr, "GET", "/api/models", b"");
    assert!(!list["models"].as_array().unwrap().is_empty());
}

/// Loading no model is no error: the page says how to get one, predictions say why not.
#[test]
fn a_server_without_models() {
    let dir = scratch_dir("serve-empty");
    let served = start(&["serve", "--port", "0", "--data", &path(&dir)], &dir);
    let (status, list) = json(served.addr, "GET", "/api/models", b"");
    assert_eq!((status, list["models"].as_array().unwrap().len()), (200, 0));
    assert!(list["test_set"].is_null());
    let (status, e) = json(served.addr, "POST", "/api/predict", b"P5\n1 1\n255\n\x00");
    assert_eq!(status, 404);
    assert!(e["error"].as_str().unwrap().contains("no model is loaded"));
    let (status, e) = json(served.addr, "GET", "/api/test-digit", b"");
    assert_eq!(status, 404, "{e}");
    // a model file that is not one: a clear error, exit 1
    let bad = dir.join("bad.safetensors");
    std::fs::write(&bad, b"not a model").unwrap();
    let out = backprop(&["serve", &path(&bad), "--port", "0"]);
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("bad.safetensors") && said.lines().count() == 1,
        "{said}"
    );
}
