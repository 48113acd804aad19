//! The unix socket's request path (PROTOCOL.md, "Transports"), pure: length-prefixed frames
//! of clear JSON; each request is answered, a payload that does not parse with an error
//! response. The daemon's control socket reads through it, and so does a fuzz target.

use super::payload::{Request, RequestParser, Response};

/// Largest request accepted on the local socket.
pub const MAX_LOCAL_FRAME: usize = 16 << 20;
/// Length of the prefix that carries a frame's length.
pub const LEN_PREFIX: usize = 4;

/// What to do with the bytes received so far on a local connection.
#[derive(Debug, PartialEq, Eq)]
pub enum LocalStep {
    /// Read until the buffer holds this many bytes in all.
    Need(usize),
    /// A length of 0 or above `MAX_LOCAL_FRAME`: close the connection.
    Close,
    /// `buf[LEN_PREFIX..end]` is one whole request payload.
    Frame { end: usize },
}

/// The next step for `buf`, which starts at a frame's length prefix.
pub fn next(buf: &[u8]) -> LocalStep {
    let Some(prefix) = buf.first_chunk::<LEN_PREFIX>() else {
        return LocalStep::Need(LEN_PREFIX);
    };
    let len = u32::from_be_bytes(*prefix) as usize;
    if len == 0 || len > MAX_LOCAL_FRAME {
        return LocalStep::Close;
    }
    let end = LEN_PREFIX + len;
    if buf.len() < end {
        LocalStep::Need(end)
    } else {
        LocalStep::Frame { end }
    }
}

/// The request a payload carries, or the error response that answers it.
pub fn read_request(parser: &mut RequestParser, payload: &[u8]) -> Result<Request, Response> {
    parser
        .parse(payload)
        .map_err(|e| Response::error(e.to_string()))
}

/// A response as the local socket sends it: length prefix and JSON.
pub fn encode_response(response: &Response) -> Vec<u8> {
    let body = response.to_vec();
    let mut out = Vec::with_capacity(body.len() + LEN_PREFIX);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_errors() {
        assert_eq!(next(&[0, 0]), LocalStep::Need(4));
        assert_eq!(next(&[0, 0, 0, 0]), LocalStep::Close);
        assert_eq!(next(&[0xff, 0, 0, 0]), LocalStep::Close);
        assert_eq!(next(&[0, 0, 0, 2, b'{']), LocalStep::Need(6));
        assert_eq!(
            next(&[0, 0, 0, 2, b'{', b'}', 9]),
            LocalStep::Frame { end: 6 }
        );
        let mut p = RequestParser::new();
        let err = read_request(&mut p, br#"{"action":"nope"}"#).unwrap_err();
        assert_ne!(err.status, 0);
        assert!(err.error.unwrap().contains("nope"));
        assert_eq!(
            read_request(&mut p, br#"{"action":"daemon_status"}"#),
            Ok(Request::DaemonStatus)
        );
    }
}
