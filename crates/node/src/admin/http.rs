//! Just enough HTTP/1.1 for the admin endpoint: one bounded GET request per connection, one
//! response, then close. No keep-alive, no bodies, no chunking: the admin routes need none,
//! and every byte a client can make the node hold is bounded here.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The most a request's head (request line and headers) may take; more is refused.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// How long a client has to send its whole request head, and to take the response.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A parsed request: what the admin routes look at.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path without its query string.
    pub path: String,
    /// The `Authorization: Bearer <token>` token, if any.
    pub bearer: Option<String>,
}

/// Why a request got no route.
#[derive(Debug, PartialEq, Eq)]
pub enum BadRequest {
    /// The head did not end within [`MAX_REQUEST_BYTES`].
    TooLarge,
    /// Not an HTTP/1.x request line.
    Malformed,
    /// The connection closed before the head ended.
    Closed,
}

/// Reads one request head, at most [`MAX_REQUEST_BYTES`] (the caller bounds the time).
pub async fn read_request<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Request, BadRequest> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = find_head_end(&head) {
            return parse_head(&head[..end]);
        }
        if head.len() >= MAX_REQUEST_BYTES {
            return Err(BadRequest::TooLarge);
        }
        let room = (MAX_REQUEST_BYTES - head.len()).min(chunk.len());
        match reader.read(&mut chunk[..room]).await {
            Ok(0) | Err(_) => return Err(BadRequest::Closed),
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Where the blank line that ends the head starts (`\r\n\r\n`, or a bare `\n\n`).
fn find_head_end(head: &[u8]) -> Option<usize> {
    let crlf = head.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = head.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn parse_head(head: &[u8]) -> Result<Request, BadRequest> {
    let text = std::str::from_utf8(head).map_err(|_| BadRequest::Malformed)?;
    let mut lines = text.lines();
    let mut first = lines.next().ok_or(BadRequest::Malformed)?.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (first.next(), first.next(), first.next(), first.next())
    else {
        return Err(BadRequest::Malformed);
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Err(BadRequest::Malformed);
    }
    let path = target.split('?').next().unwrap_or(target).to_owned();
    let mut bearer = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("authorization") {
            let value = value.trim();
            if let Some(scheme) = value.get(..7) {
                if scheme.eq_ignore_ascii_case("bearer ") {
                    bearer = Some(value[7..].trim().to_owned());
                }
            }
        }
    }
    Ok(Request {
        method: method.to_owned(),
        path,
        bearer,
    })
}

/// A whole response: status line, the headers every response carries, and the body.
pub fn response(status: u16, content_type: &str, body: &str, head_only: bool) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n",
        body.len()
    );
    if status == 401 {
        out += "WWW-Authenticate: Bearer realm=\"herd admin\"\r\n";
    }
    out += "\r\n";
    let mut bytes = out.into_bytes();
    if !head_only {
        bytes.extend_from_slice(body.as_bytes());
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(bytes: &[u8]) -> Result<Request, BadRequest> {
        let mut reader = bytes;
        read_request(&mut reader).await
    }

    #[tokio::test]
    async fn requests_are_parsed_with_their_token() {
        let request =
            read(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nauthorization: Bearer abc \r\n\r\n")
                .await
                .unwrap();
        assert_eq!(request.method, "GET");
        assert_eq!(request.path, "/metrics");
        assert_eq!(request.bearer.as_deref(), Some("abc"));
        let request = read(b"GET /healthz HTTP/1.0\n\n").await.unwrap();
        assert_eq!((request.path.as_str(), request.bearer), ("/healthz", None));
    }

    #[tokio::test]
    async fn bad_requests_are_refused() {
        assert_eq!(read(b"GET /x\r\n\r\n").await, Err(BadRequest::Malformed));
        assert_eq!(read(b"HERD STATUS\n\n").await, Err(BadRequest::Malformed));
        assert_eq!(read(b"GET /x HTTP/1.1\r\n").await, Err(BadRequest::Closed));
        let endless = vec![b'a'; MAX_REQUEST_BYTES * 2];
        assert_eq!(read(&endless).await, Err(BadRequest::TooLarge));
    }

    #[test]
    fn responses_say_their_length_and_close() {
        let text = String::from_utf8(response(200, "text/plain", "ok\n", false)).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("Content-Length: 3\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\nok\n"));
        let head = String::from_utf8(response(401, "text/plain", "no\n", true)).unwrap();
        assert!(head.contains("WWW-Authenticate: Bearer"));
        assert!(head.ends_with("\r\n\r\n"));
    }
}
