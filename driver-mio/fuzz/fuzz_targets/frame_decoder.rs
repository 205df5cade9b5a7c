//! The frame decoder fed one byte stream in three ways (whole, in the
//! input's own splits, one byte at a time) must give the same frames and
//! the same error; the UTF-8 validator fed the same bytes in those splits
//! must agree with `std::str::from_utf8` after every piece.
//!
//! Input: `[limits] [n] [n split sizes] [stream...]`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zenws_mio::fuzzing::{Decoder, Msg, Utf8Validator};

type Outcome = (Vec<Msg>, Option<(u16, String)>);

/// Decode `chunks` in order, as the connection does (`conn.rs`:
/// `ingest_frames`): call again with the rest until a chunk is used up.
fn decode<'a>(limits: (usize, usize), chunks: impl Iterator<Item = &'a [u8]>) -> Outcome {
    let mut dec = Decoder::new(limits.0, limits.1);
    let mut msgs = Vec::new();
    for chunk in chunks {
        let mut pos = 0;
        while pos < chunk.len() {
            match dec.decode(&chunk[pos..]) {
                Ok((n, frame)) => {
                    assert!(
                        n > 0 && pos + n <= chunk.len(),
                        "consumed {n} of {}",
                        chunk.len() - pos
                    );
                    pos += n;
                    match frame {
                        Some((m, _borrowed)) => {
                            if let Msg::Close(Some((_, reason))) = &m {
                                assert!(reason.len() <= 123);
                            }
                            msgs.push(m)
                        }
                        // No frame: the input is used up (the rest is kept).
                        None => assert_eq!(pos, chunk.len()),
                    }
                }
                Err(e) => {
                    assert!(matches!(e.0, 1002 | 1007 | 1009), "{e:?}");
                    return (msgs, Some(e));
                }
            }
        }
    }
    (msgs, None)
}

/// Split `data` at the sizes in `sizes` (cycled; 0 → 1).
fn split<'a>(data: &'a [u8], sizes: &[u8]) -> Vec<&'a [u8]> {
    if sizes.is_empty() {
        return vec![data];
    }
    let mut out = Vec::new();
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let n = usize::from(sizes[i % sizes.len()]).max(1).min(rest.len());
        let (a, b) = rest.split_at(n);
        out.push(a);
        rest = b;
        i += 1;
    }
    out
}

/// The validator fed `pieces` must, after each piece, have output exactly
/// the longest complete valid prefix, and fail at the first piece that
/// makes the bytes so far no valid prefix of any UTF-8 text.
fn check_utf8(pieces: &[&[u8]]) {
    let mut v = Utf8Validator::default();
    let mut out = String::new();
    let mut seen = 0;
    let whole: Vec<u8> = pieces.concat();
    for p in pieces {
        seen += p.len();
        let prefix = &whole[..seen];
        let r = v.feed(p, &mut out);
        match std::str::from_utf8(prefix) {
            Ok(s) => {
                assert_eq!(r, Ok(()), "valid prefix refused");
                assert_eq!(out, s);
            }
            Err(e) if e.error_len().is_none() => {
                assert_eq!(r, Ok(()), "valid (cut) prefix refused");
                assert_eq!(out.as_bytes(), &prefix[..e.valid_up_to()]);
            }
            Err(_) => {
                assert_eq!(r, Err(()), "invalid prefix accepted");
                return;
            }
        }
    }
    assert_eq!(v.finish().is_ok(), std::str::from_utf8(&whole).is_ok());
}

fuzz_target!(|data: &[u8]| {
    let Some((&limits, rest)) = data.split_first() else {
        return;
    };
    let Some((&n, rest)) = rest.split_first() else {
        return;
    };
    let n = usize::from(n & 15).min(rest.len());
    let (sizes, stream) = rest.split_at(n);
    const LIMITS: [usize; 4] = [0, 125, 1000, 16 << 20];
    let limits = (
        LIMITS[usize::from(limits & 3)],
        LIMITS[usize::from((limits >> 2) & 3)],
    );

    let whole = decode(limits, std::iter::once(stream));
    let pieces = split(stream, sizes);
    let split_result = decode(limits, pieces.iter().copied());
    assert_eq!(whole, split_result, "result depends on the split");
    let bytewise = decode(limits, stream.chunks(1));
    assert_eq!(whole, bytewise, "result depends on the split (bytewise)");

    check_utf8(&pieces);
    let ones: Vec<&[u8]> = stream.chunks(1).collect();
    check_utf8(&ones);
});
