//! `backprop serve`: one page on the loopback (draw a digit and watch each layer respond,
//! the first layer's filters, a training run live) and the JSON endpoints behind it.
//!
//! Requests are answered by a few worker threads; each event stream (`/api/train/events`)
//! has a thread of its own, up to [`MAX_STREAMS`]. No request can take the server down: a
//! bad one gets a 4xx and a one-line `{"error": ...}`, a handler that panics a 500.

mod http;
pub mod live;
mod models;

use std::io::Write;
use std::net::ToSocketAddrs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backprop::Error;
use backprop::data::Mnist;
use backprop::data::folder::FolderOptions;
use serde_json::json;
use tiny_http::{Method, Request};

use http::{Outcome, Refusal, Reply};
pub use live::Live;
use live::State;
use models::{Entry, Models, TestSet};

/// Event streams open at once, at most.
const MAX_STREAMS: usize = 32;
/// Threads answering requests.
const WORKERS: usize = 8;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Model or checkpoint files (.safetensors), or run directories (their best, else last,
    /// checkpoint): the Draw tab's model picker.
    models: Vec<PathBuf>,
    /// The port to listen on (0: any free one).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// The address to listen on; the default answers this machine only.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// The data the page trains on and draws test digits from [default: data/mnist].
    #[arg(long)]
    data: Option<PathBuf>,
}

pub fn run(args: ServeArgs) -> Result<ExitCode, Error> {
    let models = Models::read(&args.models)?;
    let data = args.data.unwrap_or_else(|| "data/mnist".into());
    let server = Server::start(
        &args.host,
        args.port,
        models,
        data,
        Arc::new(Live::default()),
    )?;
    println!(
        "serving {} ({} models; Ctrl-C to stop)",
        server.url,
        server.context.models.list().len()
    );
    server.wait();
    Ok(ExitCode::SUCCESS)
}

/// What the handlers share.
struct Context {
    models: Models,
    test: Option<TestSet>,
    live: Arc<Live>,
    /// The data directory the page's runs train on.
    data: PathBuf,
    streams: AtomicUsize,
    /// The last run whose checkpoint joined the models.
    offered_run: Mutex<u64>,
}

/// A running server.
pub struct Server {
    pub url: String,
    context: Arc<Context>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Listens on `host:port` and answers on worker threads until the process ends; the
    /// test set of `data` is read for the "random test digit" button (the page says so
    /// when there is none).
    pub fn start(
        host: &str,
        port: u16,
        models: Models,
        data: PathBuf,
        live: Arc<Live>,
    ) -> Result<Server, Error> {
        let address = (host, port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| Error::Config(format!("--host: {host:?} is not an address")))?;
        let http = tiny_http::Server::http(address)
            .map_err(|e| Error::Config(format!("cannot listen on {address}: {e}")))?;
        let bound = http
            .server_addr()
            .to_ip()
            .expect("a TCP listener has an address");
        let test = match Mnist::load_with(&data, &FolderOptions::default()) {
            Ok(set) => Some(TestSet {
                images: set.test,
                class_names: set.class_names,
            }),
            Err(e) => {
                eprintln!("no test digits: {e}");
                None
            }
        };
        let context = Arc::new(Context {
            models,
            test,
            live,
            data,
            streams: AtomicUsize::new(0),
            offered_run: Mutex::new(0),
        });
        let http = Arc::new(http);
        let workers = (0..WORKERS)
            .map(|_| {
                let (http, context) = (http.clone(), context.clone());
                std::thread::spawn(move || {
                    while let Ok(request) = http.recv() {
                        answer(&context, request);
                    }
                })
            })
            .collect();
        Ok(Server {
            url: format!("http://{bound}"),
            context,
            workers,
        })
    }

    /// Blocks while the server runs.
    pub fn wait(self) {
        for w in self.workers {
            let _ = w.join();
        }
    }
}

/// Answers one request; a panic in a handler is a 500 and the worker goes on.
fn answer(context: &Arc<Context>, mut request: Request) {
    let (path, query) = http::split_url(request.url());
    if path == "/api/train/events" && *request.method() == Method::Get {
        return stream_events(context, request);
    }
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        if *request.method() != Method::Get {
            http::same_origin(&request)?;
        }
        route(context, &mut request, &path, &query)
    }))
    .unwrap_or_else(|_| {
        Err(Refusal::new(
            500,
            "internal error: the request could not be answered",
        ))
    });
    outcome.unwrap_or_else(|r| r.reply()).send(request);
}

fn route(
    context: &Context,
    request: &mut Request,
    path: &str,
    query: &[(String, String)],
) -> Outcome {
    let get = *request.method() == Method::Get || *request.method() == Method::Head;
    let post = *request.method() == Method::Post;
    let test = context.test.as_ref();
    match path {
        "/" | "/index.html" if get => Ok(Reply::asset("text/html; charset=utf-8", PAGE)),
        "/app.js" if get => Ok(Reply::asset("text/javascript; charset=utf-8", SCRIPT)),
        "/style.css" if get => Ok(Reply::asset("text/css; charset=utf-8", STYLE)),
        "/api/models" if get => Ok(models_reply(context)),
        "/api/predict" | "/api/activations" | "/api/saliency" if post => {
            let body = http::body(request)?;
            offer_checkpoint(context);
            let entry = context.models.pick(query)?;
            match path {
                "/api/predict" => models::predict(&entry, query, &body, test),
                "/api/activations" => models::activations(&entry, query, &body, test),
                _ => models::saliency(&entry, query, &body, test),
            }
        }
        "/api/filters" if get => models::filters(&*context.models.pick(query)?),
        "/api/test-digit" if get => TestSet::endpoint(test, query),
        "/api/train" if get => {
            offer_checkpoint(context);
            Ok(Reply::json(&context.live.read(
                |r| json!({ "status": r.status, "points": r.points, "epochs": r.epochs }),
            )))
        }
        "/api/train" if post => start_training(context, &http::body(request)?),
        "/api/train/stop" if post => {
            if context.live.request_stop() {
                Ok(Reply::json(&json!({ "stopping": true })))
            } else {
                Err(Refusal::new(409, "no training run is going"))
            }
        }
        "/" | "/index.html" | "/app.js" | "/style.css" | "/api/models" | "/api/predict"
        | "/api/activations" | "/api/saliency" | "/api/filters" | "/api/test-digit"
        | "/api/train" | "/api/train/stop" | "/api/train/events" => Err(Refusal::new(
            405,
            format!("{} is not answered for {path}", request.method()),
        )),
        _ => Err(Refusal::new(404, format!("nothing at {path}"))),
    }
}

fn models_reply(context: &Context) -> Reply {
    offer_checkpoint(context);
    let models: Vec<_> = context.models.list().iter().map(|m| m.summary()).collect();
    let test = context.test.as_ref().map(|t| {
        let (c, h, w) = t.images.shape();
        json!({ "images": t.images.len(), "shape": [c, h, w] })
    });
    Reply::json(&json!({ "models": models, "test_set": test }))
}

/// A run that has ended leaves its checkpoint among the models (once).
fn offer_checkpoint(context: &Context) {
    let (run, state, checkpoint) = context
        .live
        .read(|r| (r.status.run, r.status.state, r.status.checkpoint.clone()));
    let mut offered = context
        .offered_run
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if state == State::Running || *offered == run {
        return;
    }
    *offered = run;
    if let Some(path) = checkpoint {
        match Entry::read(&path) {
            Ok(entry) => {
                context.models.add(entry);
            }
            Err(e) => eprintln!("the run's checkpoint is not offered: {e}"),
        }
    }
}

/// `POST /api/train`: the settings (JSON, the keys of `backprop train --config`) checked
/// here, the run on a thread of its own; 409 while another runs.
fn start_training(context: &Context, body: &[u8]) -> Outcome {
    let args = super::train::page_settings(body, &context.data)
        .map_err(|e| Refusal::bad(e.to_string()))?;
    let run = context
        .live
        .begin("page")
        .map_err(|m| Refusal::new(409, m))?;
    let live = context.live.clone();
    std::thread::spawn(move || {
        if let Err(e) = super::train::run_live(args, live) {
            eprintln!("training run {run}: {e}");
        }
    });
    Ok(Reply::json_status(202, &json!({ "run": run })))
}

/// `GET /api/train/events`: server-sent events, one `run` event whenever the run moves:
/// its status, and the curve's points and epochs not sent yet (all of them again when a
/// new run begins).
fn stream_events(context: &Arc<Context>, request: Request) {
    if context.streams.fetch_add(1, Ordering::SeqCst) >= MAX_STREAMS {
        context.streams.fetch_sub(1, Ordering::SeqCst);
        let busy = Refusal::new(503, format!("{MAX_STREAMS} event streams are open already"));
        return busy.reply().send(request);
    }
    let context = context.clone();
    std::thread::spawn(move || {
        let mut out = request.into_writer();
        let _ = send_events(&context, &mut out);
        context.streams.fetch_sub(1, Ordering::SeqCst);
    });
}

fn send_events(context: &Context, out: &mut dyn Write) -> std::io::Result<()> {
    out.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
    )?;
    out.flush()?;
    let (mut run, mut points, mut epochs, mut version) = (u64::MAX, 0, 0, 0);
    loop {
        let event = context.live.read(|r| {
            if r.status.run != run {
                (run, points, epochs) = (r.status.run, 0, 0);
            }
            let event = json!({
                "status": r.status,
                "points_from": points,
                "points": r.points[points.min(r.points.len())..],
                "epochs_from": epochs,
                "epochs": r.epochs[epochs.min(r.epochs.len())..],
            });
            (points, epochs, version) = (r.points.len(), r.epochs.len(), r.version);
            event
        });
        out.write_all(format!("event: run\ndata: {event}\n\n").as_bytes())?;
        out.flush()?;
        // a comment every few seconds finds a client that has gone
        while context.live.wait_past(version, Duration::from_secs(2)) == version {
            out.write_all(b": waiting\n\n")?;
            out.flush()?;
        }
        // at most ten events a second
        std::thread::sleep(Duration::from_millis(100));
    }
}

const PAGE: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/app.js");
const STYLE: &str = include_str!("page/style.css");
