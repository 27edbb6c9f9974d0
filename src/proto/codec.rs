//! The frame codec: `[u32 LE body_len][postcard body]`, drawn byte by byte in
//! `proto-docs/wire-protocol.md` ("Frames").
//!
//! Encoding builds the whole frame in one buffer. Decoding works on a
//! caller-owned [`BytesMut`] in the mini-redis style: an incomplete frame is
//! `Ok(None)` (read more and call again), never an error.

use bytes::{Buf, Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Request, Response};

/// Length of the frame header: the body length as a little-endian `u32`.
/// See `proto-docs/wire-protocol.md`, "Frames".
pub const FRAME_HEADER_BYTES: usize = 4;

/// Why a frame could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// The body is longer than the limit. When decoding, this is reported as
    /// soon as the header is seen, before any of the body has arrived, and
    /// the buffer is left untouched: the caller should answer
    /// `FrameTooLarge` and stop reading the stream.
    #[error("frame body of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The body length (declared by the header, or produced by the
        /// encoder).
        len: u64,
        /// The limit it broke.
        max: u32,
    },
    /// The body is not one valid message. The frame has been removed from
    /// the buffer, so later frames (if any) can still be decoded.
    #[error("malformed frame body of {body_len} bytes: {cause}")]
    Malformed {
        /// The body's length.
        body_len: u32,
        /// What was wrong with it.
        cause: MalformedCause,
    },
    /// Postcard could not serialize the message (not expected for the
    /// protocol's own types).
    #[error("cannot encode message: {0}")]
    Encode(#[source] postcard::Error),
}

/// What was wrong with a [`ProtoError::Malformed`] body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MalformedCause {
    /// Postcard rejected the bytes: an unknown variant index, a bad varint,
    /// bool or option tag, invalid UTF-8, or a declared length running past
    /// the end of the body.
    #[error("{0}")]
    Postcard(#[source] postcard::Error),
    /// A whole message decoded, but bytes were left over in the body.
    #[error("{extra} trailing bytes after the message")]
    TrailingBytes {
        /// How many bytes were left.
        extra: usize,
    },
}

/// The body length a frame header declares.
pub fn frame_len(header: [u8; FRAME_HEADER_BYTES]) -> u32 {
    u32::from_le_bytes(header)
}

/// Encodes `msg` as one complete frame (header and body).
///
/// # Errors
///
/// [`ProtoError::FrameTooLarge`] if the body does not fit a `u32` length (the
/// caller should also compare the frame with the peer's limit), and
/// [`ProtoError::Encode`] if postcard fails.
pub fn encode_frame<T: Serialize + ?Sized>(msg: &T) -> Result<Bytes, ProtoError> {
    let mut buf = Vec::with_capacity(64);
    buf.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
    let mut buf = postcard::to_extend(msg, buf).map_err(ProtoError::Encode)?;
    let body_len = buf.len() - FRAME_HEADER_BYTES;
    let Ok(len) = u32::try_from(body_len) else {
        return Err(ProtoError::FrameTooLarge {
            len: body_len as u64,
            max: u32::MAX,
        });
    };
    buf[..FRAME_HEADER_BYTES].copy_from_slice(&len.to_le_bytes());
    Ok(Bytes::from(buf))
}

/// Encodes a request frame (client to server).
///
/// # Errors
///
/// As [`encode_frame`].
pub fn encode_request(req: &Request) -> Result<Bytes, ProtoError> {
    encode_frame(req)
}

/// Encodes a response frame (server to client). The server must check the
/// result against its own `max_frame_bytes` (the limit it reported) and send
/// a `FrameTooLarge` error instead of a longer frame.
///
/// # Errors
///
/// As [`encode_frame`].
pub fn encode_response(resp: &Response) -> Result<Bytes, ProtoError> {
    encode_frame(resp)
}

/// Decodes one frame from the front of `buf`.
///
/// Returns `Ok(None)` while the frame is incomplete (`buf` untouched, except
/// that capacity for the rest of the frame is reserved), and
/// `Ok(Some(msg))` once it is complete (the frame is removed from `buf`;
/// bytes after it stay for the next call).
///
/// Allocation is bounded by `max_frame_bytes`: the limit is checked against
/// the header before anything is reserved, and the body is decoded from a
/// slice of exactly `body_len` bytes. A byte or string length declared inside
/// the body that runs past its end fails before anything is allocated for it,
/// and a vector reserves room for at most as many items as the body has bytes
/// left, so the decoded message stays proportional to `body_len`.
///
/// # Errors
///
/// - [`ProtoError::FrameTooLarge`] as soon as the header declares more than
///   `max_frame_bytes`, before the body arrives; `buf` is untouched.
/// - [`ProtoError::Malformed`] if the body is not exactly one `T`; the frame
///   is removed from `buf`.
pub fn decode_frame<T: DeserializeOwned>(
    buf: &mut BytesMut,
    max_frame_bytes: u32,
) -> Result<Option<T>, ProtoError> {
    let Some(header) = buf.first_chunk::<FRAME_HEADER_BYTES>() else {
        return Ok(None);
    };
    let body_len = frame_len(*header);
    // IMPORTANT: check the limit before reserving or waiting for the body, so
    // a hostile header can neither make us allocate nor make us read on.
    if body_len > max_frame_bytes {
        return Err(ProtoError::FrameTooLarge {
            len: u64::from(body_len),
            max: max_frame_bytes,
        });
    }
    // NOTE: saturating only matters on 16/32-bit targets with a limit near
    // u32::MAX; such a frame can then never complete, which is harmless.
    let frame_bytes = FRAME_HEADER_BYTES.saturating_add(body_len as usize);
    if buf.len() < frame_bytes {
        buf.reserve(frame_bytes - buf.len());
        return Ok(None);
    }
    let mut frame = buf.split_to(frame_bytes);
    frame.advance(FRAME_HEADER_BYTES);
    decode_body(&frame).map(Some)
}

/// Decodes a frame's body (the bytes after its header, already checked
/// against the limit): exactly one message, nothing after it.
///
/// # Errors
///
/// [`ProtoError::Malformed`] when the body does not decode as one `T`.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ProtoError> {
    let body_len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let malformed = |cause| ProtoError::Malformed { body_len, cause };
    match postcard::take_from_bytes::<T>(body) {
        Ok((msg, [])) => Ok(msg),
        Ok((_, rest)) => Err(malformed(MalformedCause::TrailingBytes {
            extra: rest.len(),
        })),
        Err(e) => Err(malformed(MalformedCause::Postcard(e))),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::proto::strategy::{arb_request, arb_response};

    const SMALL_MAX: u32 = 64;

    fn header(len: u32) -> [u8; 4] {
        len.to_le_bytes()
    }

    /// A frame around raw body bytes.
    fn raw_frame(body: &[u8]) -> BytesMut {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&header(u32::try_from(body.len()).expect("small")));
        buf.extend_from_slice(body);
        buf
    }

    fn ping() -> Bytes {
        encode_request(&Request::Ping).expect("encode")
    }

    #[test]
    fn frame_len_is_little_endian() {
        assert_eq!(frame_len([0x01, 0x02, 0x03, 0x04]), 0x0403_0201);
        assert_eq!(frame_len([0, 0, 0, 0]), 0);
    }

    #[test]
    fn frame_header_is_body_length_le() {
        let frame = ping();
        assert_eq!(&frame[..], &[1, 0, 0, 0, 1]);
    }

    #[test]
    fn empty_and_partial_header_are_incomplete() {
        let frame = ping();
        for cut in 0..FRAME_HEADER_BYTES {
            let mut buf = BytesMut::from(&frame[..cut]);
            assert_eq!(decode_frame::<Request>(&mut buf, SMALL_MAX), Ok(None));
            assert_eq!(buf.len(), cut, "an incomplete frame is not consumed");
        }
    }

    #[test]
    fn incomplete_body_is_not_an_error_and_reserves_the_rest() {
        let frame = encode_request(&Request::Get {
            key: Bytes::from_static(b"some key"),
        })
        .expect("encode");
        for cut in FRAME_HEADER_BYTES..frame.len() {
            let mut buf = BytesMut::from(&frame[..cut]);
            assert_eq!(decode_frame::<Request>(&mut buf, SMALL_MAX), Ok(None));
            assert_eq!(&buf[..], &frame[..cut]);
            assert!(buf.capacity() >= frame.len());
        }
    }

    #[test]
    fn over_limit_header_fails_before_the_body_arrives() {
        let mut buf = BytesMut::from(&header(SMALL_MAX + 1)[..]);
        assert_eq!(
            decode_frame::<Request>(&mut buf, SMALL_MAX),
            Err(ProtoError::FrameTooLarge {
                len: u64::from(SMALL_MAX) + 1,
                max: SMALL_MAX
            })
        );
        assert_eq!(buf.len(), 4, "buffer untouched");
        assert!(buf.capacity() < 1024, "nothing reserved for the body");
        // At exactly the limit the decoder waits for the body instead.
        let mut buf = BytesMut::from(&header(SMALL_MAX)[..]);
        assert_eq!(decode_frame::<Request>(&mut buf, SMALL_MAX), Ok(None));
        // A maximal declared length is refused at once, too.
        let mut buf = BytesMut::from(&header(u32::MAX)[..]);
        assert!(matches!(
            decode_frame::<Request>(&mut buf, DEFAULT_LIMIT),
            Err(ProtoError::FrameTooLarge { .. })
        ));
    }

    const DEFAULT_LIMIT: u32 = crate::proto::DEFAULT_MAX_FRAME_BYTES;

    #[test]
    fn trailing_garbage_in_a_body_is_malformed_and_consumed() {
        let mut body = ping()[FRAME_HEADER_BYTES..].to_vec();
        body.extend_from_slice(b"junk");
        let mut buf = raw_frame(&body);
        buf.extend_from_slice(&ping());
        assert_eq!(
            decode_frame::<Request>(&mut buf, SMALL_MAX),
            Err(ProtoError::Malformed {
                body_len: 5,
                cause: MalformedCause::TrailingBytes { extra: 4 }
            })
        );
        // The bad frame is gone; the next one decodes.
        assert_eq!(
            decode_frame::<Request>(&mut buf, SMALL_MAX),
            Ok(Some(Request::Ping))
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn empty_body_and_unknown_variant_are_malformed() {
        let mut buf = raw_frame(&[]);
        assert!(matches!(
            decode_frame::<Request>(&mut buf, SMALL_MAX),
            Err(ProtoError::Malformed {
                body_len: 0,
                cause: MalformedCause::Postcard(_)
            })
        ));
        assert!(buf.is_empty());
        for index in [22u8, 0x7f] {
            let mut buf = raw_frame(&[index]);
            assert!(matches!(
                decode_frame::<Request>(&mut buf, SMALL_MAX),
                Err(ProtoError::Malformed { .. })
            ));
        }
        // Bad bool, bad option tag, bad UTF-8.
        for body in [
            &[8u8, 0, 1, 0x61, 3, 0x02][..],   // Deleted { existed: 2 }
            &[2, 2][..],                       // Value(Option tag 2)
            &[13, 0, 2, 0xff, 0xfe, 0, 0][..], // Error message not UTF-8
        ] {
            let mut buf = raw_frame(body);
            assert!(
                matches!(
                    decode_frame::<Response>(&mut buf, SMALL_MAX),
                    Err(ProtoError::Malformed { .. })
                ),
                "{body:?}"
            );
        }
    }

    #[test]
    fn back_to_back_frames_decode_in_order() {
        let a = Request::Get {
            key: Bytes::from_static(b"a"),
        };
        let b = Request::Info;
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&encode_request(&a).expect("encode"));
        buf.extend_from_slice(&encode_request(&b).expect("encode"));
        assert_eq!(decode_frame(&mut buf, SMALL_MAX), Ok(Some(a)));
        assert_eq!(decode_frame(&mut buf, SMALL_MAX), Ok(Some(b)));
        assert_eq!(decode_frame::<Request>(&mut buf, SMALL_MAX), Ok(None));
    }

    /// Bodies that declare a length (of bytes, a string or a vector) much
    /// larger than the body itself: each must fail cleanly, without trying
    /// to allocate what it declares.
    #[test]
    fn lengths_declared_past_the_body_fail_cleanly() {
        // varint u64::MAX (10 bytes) and u32::MAX (5 bytes)
        let huge64 = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        let huge32 = [0xff, 0xff, 0xff, 0xff, 0x0f];
        let cases: Vec<Vec<u8>> = vec![
            [&[2u8][..], &huge64[..]].concat(), // Get { key: len 2^64-1 }
            [&[2u8][..], &huge32[..], b"abc"].concat(), // Get { key: len 2^32-1 }
            [&[3u8][..], &huge32[..], &[1, 0]].concat(), // MultiGet { keys: 2^32-1 items }
            [&[0u8, 1, 1][..], &huge32[..]].concat(), // Hello { protocol: 1, token: Some(len 2^32-1) }
            [&[7u8][..], &huge32[..], &[0; 8]].concat(), // MultiSet entries
        ];
        for body in cases {
            let mut buf = raw_frame(&body);
            match decode_frame::<Request>(&mut buf, SMALL_MAX) {
                Err(ProtoError::Malformed { .. }) => {}
                other => panic!("{body:02x?}: {other:?}"),
            }
        }
        let resp_cases: Vec<Vec<u8>> = vec![
            [&[3u8][..], &huge32[..]].concat(),     // Values
            [&[11u8][..], &huge32[..]].concat(),    // Page entries
            [&[12u8][..], &huge32[..]].concat(),    // Info pairs
            [&[12u8, 1][..], &huge64[..]].concat(), // Info name length
        ];
        for body in resp_cases {
            let mut buf = raw_frame(&body);
            match decode_frame::<Response>(&mut buf, SMALL_MAX) {
                Err(ProtoError::Malformed { .. }) => {}
                other => panic!("{body:02x?}: {other:?}"),
            }
        }
    }

    #[test]
    fn encode_request_and_response_frame_their_body() {
        let resp = Response::Count(300);
        let frame = encode_response(&resp).expect("encode");
        assert_eq!(&frame[..], &[3, 0, 0, 0, 4, 0xac, 0x02]);
        let mut buf = BytesMut::from(&frame[..]);
        assert_eq!(decode_frame(&mut buf, SMALL_MAX), Ok(Some(resp)));
    }

    proptest! {
        #[test]
        fn request_roundtrips(req in arb_request()) {
            let frame = encode_request(&req).expect("encode");
            let declared = frame_len(frame[..4].try_into().expect("4 bytes"));
            prop_assert_eq!(declared as usize, frame.len() - 4);
            let mut buf = BytesMut::from(&frame[..]);
            prop_assert_eq!(decode_frame(&mut buf, DEFAULT_LIMIT), Ok(Some(req)));
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn response_roundtrips(resp in arb_response()) {
            let frame = encode_response(&resp).expect("encode");
            let mut buf = BytesMut::from(&frame[..]);
            prop_assert_eq!(decode_frame(&mut buf, DEFAULT_LIMIT), Ok(Some(resp)));
            prop_assert!(buf.is_empty());
        }

        /// A frame fed in arbitrary chunks decodes exactly once, when its
        /// last byte arrives.
        #[test]
        fn chunked_frame_decodes_once_complete(
            req in arb_request(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let frame = encode_request(&req).expect("encode");
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(frame.len())).collect();
            cuts.push(frame.len());
            cuts.sort_unstable();
            let mut buf = BytesMut::new();
            let mut fed = 0;
            for cut in cuts {
                buf.extend_from_slice(&frame[fed..cut]);
                fed = cut;
                let got = decode_frame::<Request>(&mut buf, DEFAULT_LIMIT);
                if fed < frame.len() {
                    prop_assert_eq!(got, Ok(None));
                } else {
                    prop_assert_eq!(got, Ok(Some(req.clone())));
                    prop_assert!(buf.is_empty());
                }
            }
        }

        /// Arbitrary bytes never panic the decoder; an over-limit header is
        /// refused as soon as its 4 bytes are in; any allocation is bounded by
        /// the limit.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut buf = BytesMut::from(&bytes[..]);
            loop {
                let before = buf.len();
                let declared = buf.first_chunk::<4>().map(|h| frame_len(*h));
                match decode_frame::<Request>(&mut buf, SMALL_MAX) {
                    Ok(Some(_)) | Err(ProtoError::Malformed { .. }) => {
                        let len = declared.expect("a whole frame had a header");
                        prop_assert!(len <= SMALL_MAX);
                        prop_assert_eq!(buf.len(), before - 4 - len as usize);
                    }
                    Ok(None) => {
                        prop_assert_eq!(buf.len(), before);
                        if let Some(len) = declared {
                            prop_assert!(len <= SMALL_MAX);
                            prop_assert!(before < 4 + len as usize);
                            prop_assert!(buf.capacity() <= 2 * (bytes.len() + 4 + SMALL_MAX as usize));
                        }
                        break;
                    }
                    Err(ProtoError::FrameTooLarge { len, max }) => {
                        prop_assert_eq!(Some(len), declared.map(u64::from));
                        prop_assert!(len > u64::from(max));
                        prop_assert_eq!(buf.len(), before);
                        break;
                    }
                    Err(other) => prop_assert!(false, "unexpected {other:?}"),
                }
            }
            // The same bytes as a response stream never panic either.
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) | Err(ProtoError::Malformed { .. }) =
                decode_frame::<Response>(&mut buf, SMALL_MAX)
            {}
        }

        /// A header declaring more than the limit is refused with only the
        /// header present.
        #[test]
        fn long_declared_length_is_refused_without_the_body(len in (SMALL_MAX + 1)..=u32::MAX) {
            let mut buf = BytesMut::from(&header(len)[..]);
            prop_assert_eq!(
                decode_frame::<Response>(&mut buf, SMALL_MAX),
                Err(ProtoError::FrameTooLarge { len: u64::from(len), max: SMALL_MAX })
            );
        }

        /// A valid frame with one byte changed never panics the decoder, and
        /// whatever it decodes re-encodes and decodes to the same message.
        #[test]
        fn mutated_frames_never_panic(
            req in arb_request(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let frame = encode_request(&req).expect("encode");
            let mut bytes = frame.to_vec();
            let i = at.index(bytes.len());
            bytes[i] = byte;
            let mut buf = BytesMut::from(&bytes[..]);
            if let Ok(Some(got)) = decode_frame::<Request>(&mut buf, DEFAULT_LIMIT) {
                let again = encode_request(&got).expect("encode");
                let mut buf = BytesMut::from(&again[..]);
                prop_assert_eq!(decode_frame(&mut buf, DEFAULT_LIMIT), Ok(Some(got)));
            }
        }

        /// Vec and byte-string lengths declared inside a body, larger than
        /// what remains of it, fail with Malformed.
        #[test]
        fn declared_inner_length_past_the_body_is_malformed(
            index in prop::sample::select(vec![2u8, 3, 4, 5, 7, 10, 11, 12]),
            declared in 8u64..=u64::MAX,
            tail in proptest::collection::vec(any::<u8>(), 0..7),
        ) {
            // variant index, then a varint length, then fewer bytes than it
            // declares (the tail is at most 6 bytes, the length at least 8).
            let mut body = vec![index];
            let mut v = declared;
            loop {
                let low = (v & 0x7f) as u8;
                v >>= 7;
                if v == 0 { body.push(low); break; }
                body.push(low | 0x80);
            }
            body.extend_from_slice(&tail);
            let mut buf = raw_frame(&body);
            let got = decode_frame::<Request>(&mut buf, SMALL_MAX);
            prop_assert!(matches!(got, Err(ProtoError::Malformed { .. })), "{:?}", got);
        }
    }
}
