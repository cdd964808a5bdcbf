//! The built-in demo site of `coapws serve` without a ROOT: `/hello`, `/echo`, `/time`
//! (observable, a notification every second; call [`site`] inside a tokio runtime for the
//! clock to tick), `/notes` (PUT a note, GET or observe it), and
//! `/ask-back`, which shows role reversal: it GETs a path (Uri-Query `path=…`, default
//! `/whoami`) from the very client that asked, over the same connection, and returns the
//! client's answer.

use super::{IncomingRequest, Resource, Site};
use crate::observe::Observable;
use coapws_proto::code::Code;
use coapws_proto::content_format::ContentFormat;
use coapws_proto::message::Message;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The demo site.
pub fn site() -> Site {
    Site::new()
        .resource(
            "/hello",
            Resource::new()
                .get(|_req: IncomingRequest| async {
                    Message::response(Code::CONTENT, "Hello, CoAP over WebSockets!")
                        .with_content_format(ContentFormat::TEXT_PLAIN.0)
                })
                .attr("title", "Greeting")
                .attr("ct", "0"),
        )
        .resource(
            "/echo",
            Resource::new()
                .post(|req: IncomingRequest| async move {
                    let mut r = Message::response(Code::CHANGED, req.message.payload.clone());
                    if let Some(cf) = req.message.options.content_format() {
                        r = r.with_content_format(cf);
                    }
                    r
                })
                .attr("title", "Echoes POSTed payloads"),
        )
        .resource("/notes", notes())
        .resource(
            "/ask-back",
            Resource::new().get(ask_back).attr(
                "title",
                "Asks the requesting client for a resource (role reversal)",
            ),
        )
        .resource(
            "/time",
            Resource::new()
                .get(|_req: IncomingRequest| async {
                    let secs = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0);
                    Message::response(Code::CONTENT, format_utc(secs))
                        .with_content_format(ContentFormat::TEXT_PLAIN.0)
                        .with_uint_option(coapws_proto::OptionNumber::MAX_AGE, 1)
                })
                .observable(&Observable::every(Duration::from_secs(1)))
                .attr(
                    "title",
                    "Current UTC time, observable: a notification every second",
                )
                .attr("ct", "0"),
        )
}

/// The most a PUT to `/notes` may store.
pub const NOTES_LIMIT: usize = 64 << 10;

/// `/notes`: a note kept in memory, set with PUT (up to [`NOTES_LIMIT`] bytes, with its
/// Content-Format), read with GET, observable: every PUT notifies its observers.
fn notes() -> Resource {
    let note = std::sync::Arc::new(std::sync::Mutex::new((
        bytes::Bytes::from_static(b"(no notes yet: PUT some)"),
        ContentFormat::TEXT_PLAIN.0,
    )));
    let changed = Observable::new();
    let (read, write, signal) = (note.clone(), note, changed.clone());
    Resource::new()
        .get(move |_req: IncomingRequest| {
            let (body, cf) = read.lock().unwrap_or_else(|p| p.into_inner()).clone();
            async move { Message::response(Code::CONTENT, body).with_content_format(cf) }
        })
        .put(move |req: IncomingRequest| {
            let m = &req.message;
            let answer = if m.payload.len() > NOTES_LIMIT {
                Message::response(Code::REQUEST_ENTITY_TOO_LARGE, "notes are 64 KiB at most")
                    .with_uint_option(coapws_proto::OptionNumber::SIZE1, NOTES_LIMIT as u32)
            } else {
                let cf = m
                    .options
                    .content_format()
                    .unwrap_or(ContentFormat::OCTET_STREAM.0);
                *write.lock().unwrap_or_else(|p| p.into_inner()) = (m.payload.clone(), cf);
                signal.notify();
                Message::new(Code::CHANGED)
            };
            async move { answer }
        })
        .observable(&changed)
        .attr("title", "A note kept in memory: PUT it, GET or observe it")
}

async fn ask_back(req: IncomingRequest) -> Message {
    let path = req
        .query()
        .iter()
        .find_map(|q| q.strip_prefix("path=").map(str::to_owned))
        .unwrap_or_else(|| "/whoami".to_owned());
    let question = Message::request(Code::GET, &path);
    match req.remote.request(question, Duration::from_secs(10)).await {
        Ok(answer) if answer.code.is_success() => {
            let mut r = Message::response(Code::CONTENT, answer.payload.clone());
            if let Some(cf) = answer.options.content_format() {
                r = r.with_content_format(cf);
            }
            r
        }
        // The client answered, just not with a representation (aiocoap-client, for one,
        // serves nothing): that still shows the request went back over the connection.
        Ok(answer) => Message::response(
            Code::CONTENT,
            format!(
                "asked your client for {path} over this connection; it answered {}",
                answer.code
            ),
        )
        .with_content_format(ContentFormat::TEXT_PLAIN.0),
        Err(e) => Message::response(Code::BAD_GATEWAY, format!("asking the client failed: {e}")),
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch (civil-from-days, proleptic Gregorian).
fn format_utc(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc() {
        assert_eq!(super::format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::format_utc(1_795_219_200), "2026-11-21T00:00:00Z");
        assert_eq!(
            super::format_utc(951_782_400 + 3661),
            "2000-02-29T01:01:01Z"
        );
    }
}
