//! Unit tests of the frame codec: every rule, whole input and byte by byte.

use super::*;
use proptest::prelude::*;

/// A server frame (unmasked), length in the given width (7, 16 or 64 bits;
/// 0 = minimal).
fn frame_w(b0: u8, payload: &[u8], width: u8) -> Vec<u8> {
    let mut v = vec![b0];
    let len = payload.len();
    match width {
        16 => {
            v.push(126);
            v.extend_from_slice(&(len as u16).to_be_bytes());
        }
        64 => {
            v.push(127);
            v.extend_from_slice(&(len as u64).to_be_bytes());
        }
        _ if len < 126 => v.push(len as u8),
        _ if len <= 0xFFFF => return frame_w(b0, payload, 16),
        _ => return frame_w(b0, payload, 64),
    }
    v.extend_from_slice(payload);
    v
}

fn frame(op: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    frame_w(if fin { 0x80 } else { 0 } | op, payload, 0)
}

/// An owned, comparable view of a decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
enum F {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
}

fn own(f: Frame<'_>) -> F {
    match f {
        Frame::Text(t) => F::Text(t.as_str().to_string()),
        Frame::Binary(p) => F::Binary(p.as_slice().to_vec()),
        Frame::Ping(p) => F::Ping(p.as_slice().to_vec()),
        Frame::Pong(p) => F::Pong(p.as_slice().to_vec()),
        Frame::Close(c) => F::Close(c),
    }
}

fn dec() -> Decoder {
    Decoder::new(1 << 20, 1 << 20)
}

/// Feed `input` in pieces of `step` bytes (0 = all at once); the frames
/// decoded, then the error if any.
fn run(d: &mut Decoder, input: &[u8], step: usize) -> (Vec<F>, Option<CodecError>) {
    let mut out = Vec::new();
    let step = if step == 0 { input.len().max(1) } else { step };
    for piece in input.chunks(step) {
        let mut pos = 0;
        loop {
            match d.decode(&piece[pos..]) {
                Ok((n, f)) => {
                    pos += n;
                    let got = f.is_some();
                    if let Some(f) = f {
                        out.push(own(f));
                    }
                    if !got {
                        assert_eq!(pos, piece.len(), "None must consume everything");
                        break;
                    }
                    if pos == piece.len() {
                        break;
                    }
                }
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

/// Same outcome whole, in 1-byte pieces and in 3-byte pieces.
fn check(input: &[u8], frames: &[F], err: Option<CodecError>) {
    for step in [0, 1, 2, 3, 7] {
        let (got, e) = run(&mut dec(), input, step);
        assert_eq!(got, frames, "step {step}");
        assert_eq!(e, err, "step {step}");
    }
}

fn proto(what: &'static str) -> Option<CodecError> {
    Some(CodecError::Protocol(what))
}

#[test]
fn small_text_is_borrowed_from_the_input() {
    let input = frame(OP_TEXT, true, b"hello");
    let (n, f) = dec().decode(&input).unwrap();
    assert_eq!(n, input.len());
    assert_eq!(f, Some(Frame::Text(Text::Borrowed("hello"))));
    let input = frame(OP_BINARY, true, &[1, 2, 3]);
    let (_, f) = dec().decode(&input).unwrap();
    assert_eq!(f, Some(Frame::Binary(Payload::Borrowed(&[1, 2, 3]))));
}

#[test]
fn several_frames_in_one_input_and_partial_tail_kept() {
    let mut input = frame(OP_TEXT, true, b"a");
    input.extend(frame(OP_PING, true, b"p"));
    input.extend(frame(OP_BINARY, true, b"bb"));
    let whole = input.len();
    input.extend(&frame(OP_TEXT, true, b"tail")[..3]);
    let mut d = dec();
    let (got, e) = run(&mut d, &input, 0);
    assert_eq!(e, None);
    assert_eq!(
        got,
        vec![
            F::Text("a".into()),
            F::Ping(b"p".to_vec()),
            F::Binary(b"bb".to_vec())
        ]
    );
    assert!(whole < input.len());
    // The rest of the cut frame completes it.
    let (got, e) = run(&mut d, &frame(OP_TEXT, true, b"tail")[3..], 0);
    assert_eq!((got, e), (vec![F::Text("tail".into())], None));
    assert_eq!(d.buffered(), 0, "no buffer kept between messages");
}

#[test]
fn length_encodings_7_16_64_and_non_minimal() {
    for len in [0usize, 1, 125, 126, 127, 65535, 65536, 70000] {
        let p: Vec<u8> = (0..len).map(|i| i as u8).collect();
        check(&frame(OP_BINARY, true, &p), &[F::Binary(p.clone())], None);
    }
    // Non-minimal: 16-bit and 64-bit lengths for a 5-byte payload.
    check(
        &frame_w(0x81, b"hello", 16),
        &[F::Text("hello".into())],
        None,
    );
    check(
        &frame_w(0x81, b"hello", 64),
        &[F::Text("hello".into())],
        None,
    );
    check(&frame_w(0x89, b"", 64), &[F::Ping(vec![])], None);
}

#[test]
fn reserved_bits_are_refused() {
    for rsv in [0x40u8, 0x20, 0x10] {
        check(
            &frame_w(0x80 | rsv | OP_TEXT, b"x", 0),
            &[],
            proto("reserved bits set (no extension negotiated)"),
        );
    }
}

#[test]
fn reserved_opcodes_are_refused() {
    for op in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
        check(&frame(op, true, b""), &[], proto("reserved opcode"));
    }
}

#[test]
fn masked_server_frames_are_refused() {
    let input = [0x81u8, 0x81, 1, 2, 3, 4, b'x' ^ 1];
    check(&input, &[], proto("masked frame from the server"));
}

#[test]
fn control_frame_rules() {
    check(
        &frame(OP_PING, false, b""),
        &[],
        proto("fragmented control frame"),
    );
    check(
        &frame(OP_PONG, true, &[0; 126]),
        &[],
        proto("control frame payload over 125 bytes"),
    );
    // 125 is fine, in a non-minimal 16-bit length too (the payload length
    // is what RFC 6455 limits).
    check(
        &frame(OP_PONG, true, &[7; 125]),
        &[F::Pong(vec![7; 125])],
        None,
    );
    check(&frame_w(0x89, b"x", 16), &[F::Ping(b"x".to_vec())], None);
}

#[test]
fn fragmentation_rules() {
    check(
        &frame(OP_CONT, true, b"x"),
        &[],
        proto("continuation frame without a message to continue"),
    );
    let mut input = frame(OP_TEXT, false, b"a");
    input.extend(frame(OP_BINARY, true, b"b"));
    check(
        &input,
        &[],
        proto("new data frame while a fragmented message is unfinished"),
    );
    // Text in three fragments with a ping and a pong in between.
    let mut input = frame(OP_TEXT, false, b"Hel");
    input.extend(frame(OP_PING, true, b"1"));
    input.extend(frame(OP_CONT, false, b"lo, "));
    input.extend(frame(OP_PONG, true, b""));
    input.extend(frame(OP_CONT, true, b"world"));
    input.extend(frame(OP_BINARY, true, b"next"));
    check(
        &input,
        &[
            F::Ping(b"1".to_vec()),
            F::Pong(vec![]),
            F::Text("Hello, world".into()),
            F::Binary(b"next".to_vec()),
        ],
        None,
    );
    // Empty fragments.
    let mut input = frame(OP_BINARY, false, b"");
    input.extend(frame(OP_CONT, false, b""));
    input.extend(frame(OP_CONT, true, b""));
    check(&input, &[F::Binary(vec![])], None);
}

#[test]
fn size_limits() {
    let mut d = Decoder::new(10, 15);
    let e = run(&mut d, &frame(OP_BINARY, true, &[0; 11]), 1).1;
    assert_eq!(e, Some(CodecError::TooLarge { size: 11, max: 10 }));
    let mut d = Decoder::new(10, 15);
    let mut input = frame(OP_TEXT, false, b"0123456789");
    input.extend(frame(OP_CONT, true, b"012345"));
    let e = run(&mut d, &input, 0).1;
    assert_eq!(e, Some(CodecError::TooLarge { size: 16, max: 15 }));
    // The limit is known from the header alone: fail before the payload.
    let mut d = Decoder::new(10, 15);
    let e = run(
        &mut d,
        &[0x82, 127, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
        1,
    )
    .1;
    assert!(matches!(e, Some(CodecError::TooLarge { .. })), "{e:?}");
    // Exactly at the limits is fine.
    let mut d = Decoder::new(10, 15);
    let mut input = frame(OP_TEXT, false, b"0123456789");
    input.extend(frame(OP_CONT, true, b"01234"));
    assert_eq!(run(&mut d, &input, 0).1, None);
}

#[test]
fn size_limits_on_whole_small_frames() {
    // Whole 7-bit-length frames in one input (the decoder's fast path).
    let mut d = Decoder::new(10, 15);
    let e = run(&mut d, &frame(OP_BINARY, true, &[0; 11]), 0).1;
    assert_eq!(e, Some(CodecError::TooLarge { size: 11, max: 10 }));
    let mut d = Decoder::new(20, 5);
    let e = run(&mut d, &frame(OP_TEXT, true, b"012345"), 0).1;
    assert_eq!(e, Some(CodecError::TooLarge { size: 6, max: 5 }));
    let mut d = Decoder::new(10, 10);
    let mut input = frame(OP_TEXT, true, b"0123456789");
    input.extend(frame(OP_BINARY, true, b"0123456789"));
    assert_eq!(run(&mut d, &input, 0).1, None);
    // RSV bits, a masked frame, bad UTF-8: refused as on the general path.
    let mut bad = frame(OP_TEXT, true, b"hi");
    bad[0] |= 0x40;
    assert!(matches!(
        run(&mut Decoder::new(99, 99), &bad, 0).1,
        Some(CodecError::Protocol(_))
    ));
    let mut masked = frame(OP_BINARY, true, b"hi");
    masked[1] |= 0x80;
    assert!(matches!(
        run(&mut Decoder::new(99, 99), &masked, 0).1,
        Some(CodecError::Protocol(_))
    ));
    let e = run(
        &mut Decoder::new(99, 99),
        &frame(OP_TEXT, true, b"a\xFFb"),
        0,
    )
    .1;
    assert_eq!(e, Some(CodecError::Utf8));
}

#[test]
fn invalid_utf8_in_a_whole_frame() {
    check(
        &frame(OP_TEXT, true, b"ab\xFFcd"),
        &[],
        Some(CodecError::Utf8),
    );
    check(
        &frame(OP_TEXT, true, b"ab\xE2\x82"),
        &[],
        Some(CodecError::Utf8),
    );
    // Binary is not checked.
    check(
        &frame(OP_BINARY, true, b"\xFF"),
        &[F::Binary(vec![0xFF])],
        None,
    );
}

#[test]
fn utf8_split_across_fragments_and_reads() {
    let text = "κόσμε ✓ 𝄞 end";
    let b = text.as_bytes();
    for cut1 in 0..b.len() {
        for cut2 in cut1..b.len() {
            let mut input = frame(OP_TEXT, false, &b[..cut1]);
            input.extend(frame(OP_CONT, false, &b[cut1..cut2]));
            input.extend(frame(OP_CONT, true, &b[cut2..]));
            let (got, e) = run(&mut dec(), &input, 1);
            assert_eq!((got, e), (vec![F::Text(text.into())], None));
        }
    }
    // A sequence cut by the end of the message.
    let mut input = frame(OP_TEXT, false, b"a\xF0\x9D");
    input.extend(frame(OP_CONT, true, b"\x84"));
    check(&input, &[], Some(CodecError::Utf8));
}

#[test]
fn invalid_utf8_fails_at_the_bad_byte() {
    // A 20-byte text frame whose 6th byte is bad: feeding only the header
    // and 6 payload bytes must already fail (strict Autobahn 6.4.3/6.4.4).
    let mut p = b"hello".to_vec();
    p.extend(b"\xF4\x90\x80\x80"); // > U+10FFFF
    p.extend(b"-rest-of-the");
    let input = frame(OP_TEXT, true, &p);
    for step in [1, 2, 3] {
        let mut d = dec();
        let (_, e) = run(&mut d, &input[..2 + 7], step);
        assert_eq!(e, Some(CodecError::Utf8), "step {step}");
    }
    // Same across fragments: the bad byte in a non-final fragment.
    let mut input = frame(OP_TEXT, false, b"ok");
    input.extend(frame(OP_CONT, false, b"\xED\xA0")); // surrogate
    assert_eq!(run(&mut dec(), &input, 1).1, Some(CodecError::Utf8));
}

#[test]
fn close_frames() {
    check(&frame(OP_CLOSE, true, b""), &[F::Close(None)], None);
    check(
        &frame(OP_CLOSE, true, b"\x03"),
        &[],
        proto("close frame with a 1-byte payload"),
    );
    let mut p = 1000u16.to_be_bytes().to_vec();
    p.extend(b"bye");
    check(
        &frame(OP_CLOSE, true, &p),
        &[F::Close(Some((1000, "bye".into())))],
        None,
    );
    // Codes come back as received, whatever they are.
    check(
        &frame(OP_CLOSE, true, &1004u16.to_be_bytes()),
        &[F::Close(Some((1004, String::new())))],
        None,
    );
    let mut p = 1000u16.to_be_bytes().to_vec();
    p.extend(b"\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5\xED\xA0\x80");
    check(&frame(OP_CLOSE, true, &p), &[], Some(CodecError::Utf8));
}

#[test]
fn utf8_validator_matches_std_on_every_split() {
    let samples: [&[u8]; 11] = [
        "plain ascii".as_bytes(),
        "aκ𝄞b€".as_bytes(),
        b"a\xE2\x28\xA1",
        b"\xF0\x9F\x98\x80\x80",
        "κόσμε".as_bytes(),
        "𝄞𝄞".as_bytes(),
        b"\xC0\x80",
        b"\xE0\x80\x80",
        b"\xED\xA0\x80",
        b"\xF4\x90\x80\x80",
        b"ok\xF0\x9F\x98",
    ];
    for s in samples {
        let want = std::str::from_utf8(s).is_ok();
        for cut in 0..=s.len() {
            for cut2 in cut..=s.len() {
                let mut v = Utf8Validator::default();
                let mut text = String::new();
                let ok = v.feed(&s[..cut], &mut text).is_ok()
                    && v.feed(&s[cut..cut2], &mut text).is_ok()
                    && v.feed(&s[cut2..], &mut text).is_ok()
                    && v.finish().is_ok();
                assert_eq!(ok, want, "{s:?} cut at {cut}/{cut2}");
                if ok {
                    assert_eq!(text.as_bytes(), s, "{s:?} cut at {cut}/{cut2}");
                }
            }
        }
    }
}

#[test]
fn encoder_masks_and_lengths() {
    let mut rng = MaskRng::from_os();
    for len in [0usize, 1, 7, 8, 9, 125, 126, 65535, 65536] {
        let p: Vec<u8> = (0..len).map(|i| (i * 31) as u8).collect();
        let key = rng.next_key();
        let mut out = Vec::new();
        encode(&mut out, OP_BINARY, true, &p, key);
        assert_eq!(out[0], 0x82);
        assert_ne!(out[1] & 0x80, 0, "client frames are masked");
        let (hlen, got_len) = match out[1] & 0x7F {
            126 => (4, usize::from(u16::from_be_bytes([out[2], out[3]]))),
            127 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&out[2..10]);
                (10, u64::from_be_bytes(n) as usize)
            }
            n => (2, usize::from(n)),
        };
        assert_eq!(got_len, len);
        assert_eq!(
            hlen,
            if len < 126 {
                2
            } else if len <= 0xFFFF {
                4
            } else {
                10
            }
        );
        assert_eq!(&out[hlen..hlen + 4], &key);
        let mut body = out[hlen + 4..].to_vec();
        assert_eq!(body.len(), len);
        for (i, b) in body.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
        assert_eq!(body, p);
    }
}

#[test]
fn encode_into_matches_encode() {
    let mut rng = MaskRng::from_os();
    for len in (0..=SMALL_PAYLOAD).chain([126, 300, 65535, 65536]) {
        let p: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        let key = rng.next_key();
        for (op, fin) in [(OP_TEXT, true), (OP_BINARY, false), (OP_PONG, true)] {
            let mut want = Vec::new();
            encode(&mut want, op, fin, &p, key);
            let mut buf = vec![0xEE; len + 14];
            let n = encode_into(&mut buf, op, fin, &p, key);
            assert_eq!(&buf[..n], &want[..], "len {len} op {op} fin {fin}");
        }
    }
}

#[test]
fn mask_keys_vary_across_refills_and_threads() {
    let mut rng = MaskRng::from_os();
    // 3,000 keys: many ChaCha blocks.
    let keys: Vec<[u8; 4]> = (0..3000).map(|_| rng.next_key()).collect();
    let distinct: std::collections::HashSet<[u8; 4]> = keys.iter().copied().collect();
    assert!(
        distinct.len() > 2990,
        "{} distinct keys of 3000",
        distinct.len()
    );
    // Later blocks are fresh, not the same block again.
    assert_ne!(keys[..1024], keys[1024..2048]);
    let other = std::thread::spawn(|| {
        let mut r = MaskRng::from_os();
        (0..16).map(|_| r.next_key()).collect::<Vec<_>>()
    })
    .join()
    .unwrap();
    assert_ne!(other[..], keys[..16], "threads share no stream");
}

/// The previous generator, kept as the cost baseline: wyrand seeded once
/// per connection.
struct Wyrand(u64);

impl Wyrand {
    fn next_key(&mut self) -> [u8; 4] {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.0).wrapping_mul(u128::from(self.0 ^ 0xe703_7ed1_a0b4_28db));
        (((t >> 64) as u64 ^ t as u64) as u32).to_ne_bytes()
    }
}

/// Cost per key and per small frame, CSPRNG buffer vs. wyrand, same run:
/// `cargo test --release -p zenws-mio --lib -- --ignored mask_key_cost --nocapture`.
#[test]
#[ignore = "benchmark: run in release with --nocapture"]
fn mask_key_cost() {
    use std::hint::black_box;
    use std::time::Instant;
    const N: u32 = 20_000_000;
    let payload = [0x41u8; 32];
    let mut out = Vec::with_capacity(64);
    let best = |f: &mut dyn FnMut() -> u32| {
        (0..5)
            .map(|_| {
                let t = Instant::now();
                black_box(f());
                t.elapsed().as_secs_f64() * 1e9 / f64::from(N)
            })
            .fold(f64::INFINITY, f64::min)
    };
    let mut wy = Wyrand(getrandom::u64().unwrap());
    let mut cs = MaskRng::from_os();
    let key_wy = best(&mut || {
        let mut x = 0u32;
        for _ in 0..N {
            x ^= u32::from_ne_bytes(wy.next_key());
        }
        x
    });
    let key_cs = best(&mut || {
        let mut x = 0u32;
        for _ in 0..N {
            x ^= u32::from_ne_bytes(cs.next_key());
        }
        x
    });
    let frame_wy = best(&mut || {
        let mut x = 0u32;
        for _ in 0..N {
            out.clear();
            encode(&mut out, OP_TEXT, true, black_box(&payload), wy.next_key());
            x ^= u32::from(out[7]);
        }
        x
    });
    let frame_cs = best(&mut || {
        let mut x = 0u32;
        for _ in 0..N {
            out.clear();
            encode(&mut out, OP_TEXT, true, black_box(&payload), cs.next_key());
            x ^= u32::from(out[7]);
        }
        x
    });
    println!(
        "mask key:  wyrand {key_wy:.2} ns, StdRng (ChaCha12) {key_cs:.2} ns, ratio {:.2}",
        key_cs / key_wy
    );
    println!(
        "32 B frame encode+key: wyrand {frame_wy:.2} ns, StdRng (ChaCha12) {frame_cs:.2} ns, ratio {:.2}",
        frame_cs / frame_wy
    );
}

#[test]
fn apply_mask_matches_the_definition() {
    let key = [0x12, 0x34, 0x56, 0x78];
    for len in 0..40 {
        let p: Vec<u8> = (0..len).map(|i| i as u8 ^ 0xA5).collect();
        let mut fast = p.clone();
        apply_mask(&mut fast, key);
        let slow: Vec<u8> = p.iter().enumerate().map(|(i, b)| b ^ key[i % 4]).collect();
        assert_eq!(fast, slow, "len {len}");
    }
}

#[test]
fn close_encoding() {
    let mut out = Vec::new();
    encode_close(&mut out, Some(1001), "going", [0; 4]);
    assert_eq!(
        out,
        [
            0x88,
            0x80 | 7,
            0,
            0,
            0,
            0,
            0x03,
            0xE9,
            b'g',
            b'o',
            b'i',
            b'n',
            b'g'
        ]
    );
    out.clear();
    encode_close(&mut out, None, "ignored", [9; 4]);
    assert_eq!(out, [0x88, 0x80, 9, 9, 9, 9]);
    out.clear();
    let long = "x".repeat(200);
    encode_close(&mut out, Some(1000), &long, [0; 4]);
    assert_eq!(out[1] & 0x7F, 125);
}

#[test]
fn decoder_is_small_and_frees_its_buffer() {
    assert!(
        std::mem::size_of::<Decoder>() <= 128,
        "{}",
        std::mem::size_of::<Decoder>()
    );
    let mut d = dec();
    let input = frame(OP_BINARY, true, &[1; 5000]);
    let (got, _) = run(&mut d, &input, 1000);
    assert_eq!(got.len(), 1);
    assert_eq!(d.buffered(), 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Random bytes, cut anywhere: never a panic, and `None` always
    /// consumes everything.
    #[test]
    fn random_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        step in 1usize..40,
        max in 0usize..200,
    ) {
        let mut d = Decoder::new(max, max);
        let _ = run(&mut d, &bytes, step);
    }

    /// Random sequences of valid frames: same result in any pieces.
    #[test]
    fn valid_frames_any_split(
        parts in proptest::collection::vec((0u8..4, proptest::collection::vec(any::<u8>(), 0..200)), 1..8),
        step in 1usize..50,
    ) {
        let mut input = Vec::new();
        let mut want = Vec::new();
        for (kind, p) in &parts {
            match kind {
                0 => { input.extend(frame(OP_BINARY, true, p)); want.push(F::Binary(p.clone())); }
                1 => {
                    let s = String::from_utf8_lossy(p).into_owned();
                    let b = s.as_bytes();
                    let cut = b.len() / 2;
                    input.extend(frame(OP_TEXT, false, &b[..cut]));
                    input.extend(frame(OP_PING, true, &p[..p.len().min(125)]));
                    want.push(F::Ping(p[..p.len().min(125)].to_vec()));
                    input.extend(frame(OP_CONT, true, &b[cut..]));
                    want.push(F::Text(s));
                }
                2 => { input.extend(frame(OP_PONG, true, &p[..p.len().min(125)])); want.push(F::Pong(p[..p.len().min(125)].to_vec())); }
                _ => { input.extend(frame_w(0x82, p, 64)); want.push(F::Binary(p.clone())); }
            }
        }
        let (got, e) = run(&mut dec(), &input, step);
        prop_assert_eq!(e, None);
        prop_assert_eq!(got, want);
    }
}
