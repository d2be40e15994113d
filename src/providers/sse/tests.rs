use futures_util::StreamExt;

use super::*;

/// Everything a reader gives for `pieces`, up to and including its first error (as text).
type Read = Vec<Result<Sse, String>>;

/// `pieces` as a body.
fn body(pieces: &[Vec<u8>]) -> impl Stream<Item = Result<Bytes, std::io::Error>> + use<> {
    let items: Vec<_> = pieces.iter().map(|p| Ok(Bytes::from(p.clone()))).collect();
    futures_util::stream::iter(items)
}

/// What `events` gives up to and including its first error, errors as text.
async fn until_error<E: std::fmt::Display>(events: impl Stream<Item = Result<Sse, E>>) -> Read {
    let mut events = std::pin::pin!(events);
    let mut out = Vec::new();
    while let Some(item) = events.next().await {
        let stop = item.is_err();
        out.push(item.map_err(|e| e.to_string()));
        if stop {
            break;
        }
    }
    out
}

async fn ours(pieces: &[Vec<u8>]) -> Read {
    until_error(events(body(pieces))).await
}

async fn crate_reads(pieces: &[Vec<u8>]) -> Read {
    until_error(sse_stream::SseStream::from_bytes_stream(body(pieces))).await
}

/// Random event-stream text: fields (known, unknown, without a colon), values with spaces,
/// colons, NULs, non-ASCII and invalid UTF-8, comments, and every line ending. What the crate
/// refuses (an unknown field, a line without a colon, a bad `retry`, invalid UTF-8, a field twice)
/// comes rarely, so that most streams run for several events first.
fn random_stream(rng: &mut fastrand::Rng) -> Vec<u8> {
    const NAMES: [&[u8]; 6] = [b"data", b"data", b"data", b"data", b"", b"id"];
    const RARE_NAMES: [&[u8]; 3] = [b"event", b"retry", b"foo"];
    const VALUES: [&[u8]; 9] = [
        b"",
        b" ",
        b" hello",
        b"{\"a\": 1}",
        b"x:y",
        b"  two spaces",
        b"caf\xC3\xA9",
        b"nul\0",
        b" [DONE]",
    ];
    const RARE_VALUES: [&[u8]; 3] = [b" 42", b"7 ", b"bad \xFF byte"];
    const ENDS: [&[u8]; 4] = [b"\n", b"\r\n", b"\r", b"\n\n"];
    let mut out = Vec::new();
    if rng.u8(..10) == 0 {
        out.extend_from_slice(BOM);
    }
    for _ in 0..rng.usize(0..24) {
        let rare = rng.u8(..40) == 0;
        match rng.u8(..12) {
            0 => {}
            1 if rare => out.extend_from_slice(b"no colon here"),
            _ => {
                if rare {
                    out.extend_from_slice(RARE_NAMES[rng.usize(..RARE_NAMES.len())]);
                } else {
                    out.extend_from_slice(NAMES[rng.usize(..NAMES.len())]);
                }
                out.push(b':');
                if rng.u8(..20) == 0 {
                    out.extend_from_slice(RARE_VALUES[rng.usize(..RARE_VALUES.len())]);
                } else {
                    out.extend_from_slice(VALUES[rng.usize(..VALUES.len())]);
                }
            }
        }
        out.extend_from_slice(ENDS[rng.usize(..ENDS.len())]);
    }
    out
}

/// `bytes` cut at random places (pieces are never empty: a body does not send those).
fn split(rng: &mut fastrand::Rng, bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut pieces = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = rng.usize(1..=rest.len().min(12));
        let (piece, after) = rest.split_at(n);
        pieces.push(piece.to_vec());
        rest = after;
    }
    pieces
}

#[tokio::test]
async fn reads_as_the_crate_reads() {
    let mut rng = fastrand::Rng::with_seed(7);
    let mut errors = 0;
    let mut events = 0;
    for _ in 0..3000 {
        let text = random_stream(&mut rng);
        // Whole, and cut at random places.
        for pieces in [vec![text.clone()], split(&mut rng, &text)] {
            let pieces: Vec<Vec<u8>> = pieces.into_iter().filter(|p| !p.is_empty()).collect();
            let want = crate_reads(&pieces).await;
            let got = ours(&pieces).await;
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(&text));
            errors += want.iter().filter(|r| r.is_err()).count();
            events += want.iter().filter(|r| r.is_ok()).count();
        }
    }
    // The input reached both outcomes often.
    assert!(
        errors > 300 && events > 10_000,
        "{errors} errors, {events} events"
    );
}

#[tokio::test]
async fn a_recorded_stream_reads_the_same_in_any_pieces() {
    let text = std::fs::read(format!(
        "{}/tests/fixtures/openai/chat_stream.sse",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap_or_default();
    assert!(!text.is_empty());
    let whole = ours(std::slice::from_ref(&text)).await;
    assert_eq!(whole.len(), 7, "six chunks and [DONE]");
    assert_eq!(
        whole.last().and_then(|r| r.as_ref().ok()?.data.clone()),
        Some("[DONE]".into())
    );
    let mut rng = fastrand::Rng::with_seed(11);
    for _ in 0..200 {
        assert_eq!(ours(&split(&mut rng, &text)).await, whole);
    }
    // A body error ends the events with it.
    let body = futures_util::stream::iter(vec![
        Ok(Bytes::from_static(b"data: a\n\ndata: b")),
        Err(std::io::Error::other("reset")),
    ]);
    let read: Vec<_> = events(body)
        .map(|r| r.map_err(|e| e.to_string()))
        .collect()
        .await;
    assert_eq!(read.len(), 2, "{read:?}");
    assert_eq!(
        read[0].as_ref().ok().and_then(|s| s.data.as_deref()),
        Some("a")
    );
    assert_eq!(read[1], Err("body error: reset".to_owned()));
}

#[test]
fn an_event_is_bounded_across_pieces_and_line_ends() {
    let big = vec![b'x'; MAX_SSE_EVENT / 2];
    for sep in [&b"\n\n"[..], b"\r\n\r\n", b"\r\r", b"\n\r\n"] {
        // Two half-size events with a blank line between: never over.
        let mut p = Parser::default();
        assert!(p.feed(b"data: ").is_ok());
        assert!(p.feed(&big).is_ok());
        assert!(p.feed(sep).is_ok());
        assert!(p.feed(b"data: ").is_ok());
        assert!(p.feed(&big).is_ok(), "{sep:?}");
        // One event of many lines without a blank line: over once past the bound.
        let mut p = Parser::default();
        assert!(p.feed(b"data: ").is_ok() && p.feed(&big).is_ok());
        assert!(p.feed(&sep[..sep.len() / 2]).is_ok());
        assert!(p.feed(b"data: ").is_ok(), "{sep:?}");
        assert!(matches!(p.feed(&big), Err(SseError::TooLarge)), "{sep:?}");
    }
    // A \r\n split across pieces is one line end, not a blank line.
    let mut p = Parser::default();
    assert!(p.feed(b"data: ").is_ok());
    assert!(p.feed(&big).is_ok());
    assert!(p.feed(b"\r").is_ok());
    assert!(p.feed(b"\n").is_ok());
    assert!(p.feed(b"data: ").is_ok());
    assert!(matches!(p.feed(&big), Err(SseError::TooLarge)));
    // One endless line, piece by piece: refused once past the bound, not held on.
    let mut p = Parser::default();
    let piece = vec![b'x'; 1 << 20];
    let fed = (0..64).take_while(|_| p.feed(&piece).is_ok()).count();
    assert_eq!(
        fed,
        MAX_SSE_EVENT >> 20,
        "the piece that goes over is refused"
    );
}
