//! The file server's conditional PUT (RFC 7252 §5.10.8) over a real socket.

mod common;

use coapws::proto::{Code, OptionNumber};
use coapws::site::files::FileServer;
use coapws::{Endpoint, Request, Site};

/// Regression: PUT treated any If-Match as a match, so a client holding a stale ETag
/// overwrote a file that had changed since.
#[tokio::test]
async fn if_match_compares_the_files_etag() {
    let dir = std::env::temp_dir().join(format!("coapws-ifmatch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("f.txt"), "one").unwrap();
    let files = FileServer::new(&dir).unwrap().writable(true);
    let site = Site::new().files("/", files, vec![]);
    let server = Endpoint::builder().site(site).build();
    let addr = server
        .listen_ws("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let uri = format!("coap+ws://{addr}/f.txt");
    let client = Endpoint::client();
    let etag = client
        .get(&uri)
        .await
        .unwrap()
        .message
        .options
        .get(OptionNumber::ETAG)
        .cloned()
        .expect("the file's ETag");
    let put = |body: &'static str, if_match: &[u8]| {
        Request::new(Code::PUT, &uri)
            .unwrap()
            .payload(body)
            .option(OptionNumber::IF_MATCH, if_match.to_vec())
    };
    // A stale ETag: refused, the file stays.
    let r = client.send(put("two", b"stale!!!")).await.unwrap();
    assert_eq!(r.code(), Code::PRECONDITION_FAILED);
    assert_eq!(std::fs::read_to_string(dir.join("f.txt")).unwrap(), "one");
    // The current one: written.
    let r = client.send(put("two", &etag)).await.unwrap();
    assert_eq!(r.code(), Code::CHANGED);
    assert_eq!(std::fs::read_to_string(dir.join("f.txt")).unwrap(), "two");
    // The old ETag no longer matches the changed file.
    let r = client.send(put("three", &etag)).await.unwrap();
    assert_eq!(r.code(), Code::PRECONDITION_FAILED);
    // An empty If-Match asks only that the file exist.
    let r = client.send(put("three", b"")).await.unwrap();
    assert_eq!(r.code(), Code::CHANGED);
    let missing = Request::new(Code::PUT, &format!("coap+ws://{addr}/new.txt"))
        .unwrap()
        .payload("x")
        .option(OptionNumber::IF_MATCH, Vec::<u8>::new());
    let r = client.send(missing).await.unwrap();
    assert_eq!(r.code(), Code::PRECONDITION_FAILED);
    assert!(!dir.join("new.txt").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
