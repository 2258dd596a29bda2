//! Hand-encoded gRPC requests: bytes a generated client refuses to send (strings that are
//! not UTF-8, oversized messages), sent to a plugin's method as they are.

use std::path::Path;

use prost::bytes::{Buf, BufMut};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;

/// A codec passing message bytes through untouched.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

/// The encoder half of [`RawCodec`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RawEncoder;

/// The decoder half of [`RawCodec`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// Sends `message` (an encoded protobuf message) to `method` (e.g.
/// `/csi.v1.Controller/CreateVolume`) of the plugin on `socket`; the answer's bytes.
pub async fn unary(
    socket: &Path,
    method: &'static str,
    message: Vec<u8>,
) -> Result<Vec<u8>, Status> {
    let channel = crate::csi::channel(socket).await;
    let mut grpc = tonic::client::Grpc::new(channel)
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(usize::MAX);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("channel not ready: {e}")))?;
    grpc.unary(
        tonic::Request::new(message),
        PathAndQuery::from_static(method),
        RawCodec,
    )
    .await
    .map(tonic::Response::into_inner)
}

/// Protobuf encoding of a length-delimited field (string, bytes, message, map entry).
pub fn field(number: u32, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 10);
    varint(&mut out, u64::from(number << 3 | 2));
    varint(&mut out, bytes.len() as u64);
    out.extend_from_slice(bytes);
    out
}

/// Protobuf encoding of a map<string, string> entry of field `number` (raw key and value).
pub fn map_entry(number: u32, key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut entry = field(1, key);
    entry.extend(field(2, value));
    field(number, &entry)
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_varints_encode_as_protobuf_does() {
        assert_eq!(field(1, b"ab"), vec![0x0a, 2, b'a', b'b']);
        let long = vec![0u8; 300];
        let encoded = field(4, &long);
        assert_eq!(&encoded[..3], &[0x22, 0xac, 0x02]);
        assert_eq!(encoded.len(), 303);
        assert_eq!(
            map_entry(5, b"k", b"v"),
            vec![0x2a, 6, 0x0a, 1, b'k', 0x12, 1, b'v']
        );
    }
}
