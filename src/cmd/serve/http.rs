//! What every endpoint shares: the query, the body (within its limit), JSON replies and
//! errors as a status with a one-line message.

use std::io::Read;

use serde::Serialize;
use tiny_http::{Header, Request, Response};

/// The largest request body taken (an image, a run's settings).
pub const BODY_LIMIT: usize = 1 << 20;

/// A reply: status, content type, body.
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Reply {
    /// `value` as JSON, status 200.
    pub fn json(value: &impl Serialize) -> Reply {
        Reply::json_status(200, value)
    }

    pub fn json_status(status: u16, value: &impl Serialize) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: serde_json::to_vec(value).expect("plain values serialize"),
        }
    }

    /// A file of the page.
    pub fn asset(content_type: &'static str, text: &'static str) -> Reply {
        Reply {
            status: 200,
            content_type,
            body: text.as_bytes().to_vec(),
        }
    }

    /// Sends it; a client gone already is no error of ours.
    pub fn send(self, request: Request) {
        let header = |k: &str, v: &str| {
            Header::from_bytes(k.as_bytes(), v.as_bytes()).expect("ASCII header")
        };
        let response = Response::from_data(self.body)
            .with_status_code(self.status)
            .with_header(header("Content-Type", self.content_type))
            .with_header(header("Cache-Control", "no-store"));
        let _ = request.respond(response);
    }
}

/// A request refused: its status and why, in a line.
#[derive(Debug)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
}

impl Refusal {
    pub fn new(status: u16, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
        }
    }

    pub fn bad(message: impl Into<String>) -> Refusal {
        Refusal::new(400, message)
    }

    pub fn reply(&self) -> Reply {
        Reply::json_status(
            self.status,
            &serde_json::json!({ "error": self.message.replace('\n', " ") }),
        )
    }
}

/// An endpoint's outcome.
pub type Outcome = Result<Reply, Refusal>;

/// The path and the query's `key=value` pairs, percent-decoded.
pub fn split_url(url: &str) -> (String, Vec<(String, String)>) {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let pairs = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect();
    (decode(path), pairs)
}

/// `%41` and `+` decoded; a malformed escape is kept as it is.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of `key` in the query, if given.
pub fn param<'a>(query: &'a [(String, String)], key: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// `key` as a number, if given; a value that is not one is refused.
pub fn number_param(query: &[(String, String)], key: &str) -> Result<Option<usize>, Refusal> {
    param(query, key)
        .map(|v| {
            v.parse::<usize>()
                .map_err(|_| Refusal::bad(format!("{key}={v:?} is not a whole number")))
        })
        .transpose()
}

/// The body, refused (413) beyond [`BODY_LIMIT`] whether or not it says its length.
pub fn body(request: &mut Request) -> Result<Vec<u8>, Refusal> {
    let too_large = || {
        Refusal::new(
            413,
            format!("the request body is over the limit of {BODY_LIMIT} bytes"),
        )
    };
    if request.body_length().is_some_and(|n| n > BODY_LIMIT) {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    request
        .as_reader()
        .take(BODY_LIMIT as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Refusal::bad(format!("the request body could not be read: {e}")))?;
    if bytes.len() > BODY_LIMIT {
        return Err(too_large());
    }
    Ok(bytes)
}

/// A request sent from another site's page (its `Origin` names a host other than the one
/// it was sent to) is refused: a page anywhere could otherwise start training runs on the
/// reader's machine. Scripts and curl send no `Origin`, and pass.
pub fn same_origin(request: &Request) -> Result<(), Refusal> {
    let header = |name: &'static str| {
        request
            .headers()
            .iter()
            .find(|h| h.field.equiv(name))
            .map(|h| h.value.as_str().to_string())
    };
    let Some(origin) = header("Origin") else {
        return Ok(());
    };
    let origin_host = origin.split_once("://").map_or("", |(_, host)| host);
    if header("Host").is_some_and(|host| host.eq_ignore_ascii_case(origin_host)) {
        return Ok(());
    }
    Err(Refusal::new(
        403,
        format!(
            "a request from the page of {origin} is refused: only this server's page may send one"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_and_decode() {
        let (path, query) = split_url("/api/predict?model=runs%2Fa%20b%2Fbest&class=3&x&y=%zz%4");
        assert_eq!(path, "/api/predict");
        assert_eq!(param(&query, "model"), Some("runs/a b/best"));
        assert_eq!(number_param(&query, "class").unwrap(), Some(3));
        assert_eq!(param(&query, "x"), Some(""));
        assert_eq!(param(&query, "y"), Some("%zz%4"));
        assert!(number_param(&query, "y").is_err());
        assert_eq!(split_url("/").0, "/");
    }
}
