//! The HTTP upgrade response parser and verifier, fed the response in
//! splits as `Handshake::advance` reads it (parse only after a read that
//! brought a `\n`): the first decisive answer must be the one the whole
//! response gives, an accepted response must really be a valid 101, and no
//! error message may quote the response.
//!
//! Input: `[flags] [n] [n split sizes] [response...]`; `@ACCEPT@` in the
//! response is replaced by the request's real `Sec-WebSocket-Accept`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zenws_mio::fuzzing::{UpgradeRequest, Upgraded};
use zenws_mio::url::Target;

type Answer = Result<Option<Upgraded>, (zenws_mio::core::Error, String)>;

fn replace(hay: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len() + with.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fuzz_target!(|data: &[u8]| {
    let [flags, n, rest @ ..] = data else {
        return;
    };
    let n = usize::from(n & 15).min(rest.len());
    let (sizes, response) = rest.split_at(n);

    let target = Target::parse("ws://example.com/chat?token=S3CR3T").unwrap();
    let mut headers = Vec::new();
    if flags & 1 != 0 {
        headers.push((
            "Sec-WebSocket-Protocol".to_string(),
            "chat, superchat".to_string(),
        ));
    }
    if flags & 2 != 0 {
        headers.push(("Authorization".to_string(), "Bearer S3CR3T".to_string()));
    }
    let req = UpgradeRequest::new(&target, &headers).expect("valid request");
    let response = replace(response, b"@ACCEPT@", req.accept().as_bytes());

    let whole: Answer = req.check_response(&response);

    // As `advance` reads it: grow, parse after a read that brought '\n'.
    let mut first: Answer = Ok(None);
    let mut len = 0;
    let mut i = 0;
    while len < response.len() {
        let step = if sizes.is_empty() {
            response.len()
        } else {
            usize::from(sizes[i % sizes.len()]).max(1)
        };
        i += 1;
        let end = (len + step).min(response.len());
        let brought_newline = response[len..end].contains(&b'\n');
        len = end;
        if brought_newline {
            first = req.check_response(&response[..len]);
            if !matches!(first, Ok(None)) {
                break;
            }
        }
    }
    // `advance` parses only after a read that brought a '\n', so garbage
    // without one waits (for more, the size limit or the handshake timeout)
    // where the whole response fails at once; a head is complete only with
    // its last '\n', so an upgrade is never missed.
    if matches!(first, Ok(None)) {
        assert!(
            !matches!(whole, Ok(Some(_))),
            "a complete upgrade was missed"
        );
    } else {
        assert_eq!(first, whole, "the answer depends on the split");
    }

    match &whole {
        Ok(Some(up)) => {
            assert_eq!(up.status, 101);
            assert!(up.len <= response.len());
            let head = &response[..up.len];
            assert!(head.ends_with(b"\n"));
            assert!(
                contains(head, req.accept().as_bytes()),
                "accepted without the accept key"
            );
        }
        Ok(None) => {}
        Err((_, msg)) => {
            assert!(msg.starts_with("handshake: "), "{msg}");
            assert!(!msg.contains("S3CR3T"), "error quotes the response: {msg}");
            assert!(
                !msg.contains(req.accept()),
                "error quotes the accept key: {msg}"
            );
        }
    }
});
