//! AWS event-stream framing (`application/vnd.amazon.eventstream`), the binary framing of
//! Bedrock's `ConverseStream`.
//!
//! A message is `total_len:u32 | headers_len:u32 | prelude_crc:u32 | headers | payload |
//! message_crc:u32`, big-endian, both CRCs CRC-32 (IEEE): the first over the 8 length bytes,
//! the second over everything before it. The decoder buffers only the unfinished tail, so the
//! body may arrive split anywhere, and checks both CRCs: a corrupt length would otherwise make
//! it wait forever or read garbage as a message.

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

const PRELUDE_LEN: usize = 12;
const MIN_MESSAGE_LEN: usize = PRELUDE_LEN + 4;
/// AWS caps a message at 16 MiB (and its headers at 128 KiB); anything larger is corruption.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
const MAX_HEADERS_BYTES: usize = 128 * 1024;

/// A header value. Only strings matter to Bedrock; the other types are kept so the framing is
/// decoded whole and a message with them is not mistaken for a corrupt one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderValue {
    /// Type 7.
    String(String),
    /// Any other type, raw.
    Other(u8, Bytes),
}

/// One decoded message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The message exactly as received, prelude and CRC included.
    pub raw: Bytes,
    /// Headers in order.
    pub headers: Vec<(String, HeaderValue)>,
    /// The payload.
    pub payload: Bytes,
}

impl Message {
    /// A string header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|(n, v)| match v {
            HeaderValue::String(s) if n == name => Some(s.as_str()),
            _ => None,
        })
    }
}

/// The stream broke the framing rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The prelude's CRC does not match its lengths.
    #[error("event-stream prelude checksum mismatch")]
    PreludeCrc,
    /// The message's CRC does not match its bytes.
    #[error("event-stream message checksum mismatch")]
    MessageCrc,
    /// Lengths that cannot describe a message.
    #[error("event-stream message with impossible lengths (total {total}, headers {headers})")]
    Lengths {
        /// Declared total length.
        total: usize,
        /// Declared headers length.
        headers: usize,
    },
    /// A header that runs past the header block or has an unknown type.
    #[error("malformed event-stream header")]
    Header,
}

/// Splits a byte stream into event-stream messages.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: BytesMut,
    ready: VecDeque<Message>,
    /// Set after a framing error: nothing after it can be trusted.
    broken: bool,
}

impl Decoder {
    /// A decoder with an empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes and decodes every message they complete.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), FrameError> {
        if self.broken {
            return Ok(());
        }
        self.buf.extend_from_slice(chunk);
        loop {
            match self.decode_one() {
                Ok(Some(m)) => self.ready.push_back(m),
                Ok(None) => return Ok(()),
                Err(e) => {
                    self.broken = true;
                    self.buf.clear();
                    return Err(e);
                }
            }
        }
    }

    /// The next complete message, if one has arrived.
    pub fn next_message(&mut self) -> Option<Message> {
        self.ready.pop_front()
    }

    /// Bytes received but not yet part of a complete message.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    fn decode_one(&mut self) -> Result<Option<Message>, FrameError> {
        if self.buf.len() < PRELUDE_LEN {
            return Ok(None);
        }
        let total = be32(&self.buf[0..4]) as usize;
        let headers_len = be32(&self.buf[4..8]) as usize;
        if crc32fast::hash(&self.buf[0..8]) != be32(&self.buf[8..12]) {
            return Err(FrameError::PreludeCrc);
        }
        if !(MIN_MESSAGE_LEN..=MAX_MESSAGE_BYTES).contains(&total)
            || headers_len > MAX_HEADERS_BYTES
            || headers_len > total - MIN_MESSAGE_LEN
        {
            return Err(FrameError::Lengths {
                total,
                headers: headers_len,
            });
        }
        if self.buf.len() < total {
            return Ok(None);
        }
        if crc32fast::hash(&self.buf[..total - 4]) != be32(&self.buf[total - 4..total]) {
            return Err(FrameError::MessageCrc);
        }
        let raw = self.buf.split_to(total).freeze();
        let headers = parse_headers(raw.slice(PRELUDE_LEN..PRELUDE_LEN + headers_len))?;
        let payload = raw.slice(PRELUDE_LEN + headers_len..total - 4);
        Ok(Some(Message {
            raw,
            headers,
            payload,
        }))
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn parse_headers(mut b: Bytes) -> Result<Vec<(String, HeaderValue)>, FrameError> {
    let mut out = Vec::new();
    while b.has_remaining() {
        let name_len = usize::from(b.get_u8());
        if b.remaining() < name_len + 1 {
            return Err(FrameError::Header);
        }
        let name =
            String::from_utf8(b.split_to(name_len).to_vec()).map_err(|_| FrameError::Header)?;
        let kind = b.get_u8();
        let fixed = match kind {
            0 | 1 => Some(0),
            2 => Some(1),
            3 => Some(2),
            4 => Some(4),
            5 | 8 => Some(8),
            9 => Some(16),
            6 | 7 => None,
            _ => return Err(FrameError::Header),
        };
        let len = match fixed {
            Some(n) => n,
            None => {
                if b.remaining() < 2 {
                    return Err(FrameError::Header);
                }
                usize::from(b.get_u16())
            }
        };
        if b.remaining() < len {
            return Err(FrameError::Header);
        }
        let value = b.split_to(len);
        let value = if kind == 7 {
            HeaderValue::String(String::from_utf8(value.to_vec()).map_err(|_| FrameError::Header)?)
        } else {
            HeaderValue::Other(kind, value)
        };
        out.push((name, value));
    }
    Ok(out)
}

/// Encodes one message with string headers (for tests and fixtures; the gateway only reads
/// this framing).
pub fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (name, value) in headers {
        h.push(name.len() as u8);
        h.extend_from_slice(name.as_bytes());
        h.push(7);
        h.extend_from_slice(&(value.len() as u16).to_be_bytes());
        h.extend_from_slice(value.as_bytes());
    }
    let total = PRELUDE_LEN + h.len() + payload.len() + 4;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(h.len() as u32).to_be_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_split_at_every_byte_and_checks_crcs() {
        let mut stream = encode(
            &[(":event-type", "a"), (":message-type", "event")],
            b"{\"x\":1}",
        );
        stream.extend(encode(&[(":event-type", "b")], b""));
        for cut in 0..=stream.len() {
            let mut d = Decoder::new();
            d.push(&stream[..cut]).unwrap();
            d.push(&stream[cut..]).unwrap();
            let a = d.next_message().unwrap();
            assert_eq!(a.header(":event-type"), Some("a"));
            assert_eq!(&a.payload[..], b"{\"x\":1}");
            assert_eq!(d.next_message().unwrap().header(":event-type"), Some("b"));
            assert!(d.next_message().is_none());
            assert_eq!(d.pending(), 0);
        }
        let mut bad = stream.clone();
        bad[20] ^= 1;
        assert_eq!(Decoder::new().push(&bad), Err(FrameError::MessageCrc));
        let mut bad = stream;
        bad[3] ^= 1;
        assert_eq!(Decoder::new().push(&bad), Err(FrameError::PreludeCrc));
    }

    /// The headerless message of `aws-c-event-stream`'s test vectors: total 29, headers 0,
    /// payload `{'foo':'bar'}`, prelude CRC 0xfd528c5a, message CRC 0xc3653936.
    #[test]
    fn decodes_reference_vector() {
        let msg: [u8; 29] = [
            0x00, 0x00, 0x00, 0x1D, 0x00, 0x00, 0x00, 0x00, 0xfd, 0x52, 0x8c, 0x5a, 0x7b, 0x27,
            0x66, 0x6f, 0x6f, 0x27, 0x3a, 0x27, 0x62, 0x61, 0x72, 0x27, 0x7d, 0xc3, 0x65, 0x39,
            0x36,
        ];
        let mut d = Decoder::new();
        d.push(&msg).unwrap();
        let m = d.next_message().unwrap();
        assert!(m.headers.is_empty());
        assert_eq!(&m.payload[..], b"{'foo':'bar'}");
        assert_eq!(encode(&[], b"{'foo':'bar'}"), msg.to_vec());
    }
}
