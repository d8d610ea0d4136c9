//! The gRPC codec of every `deskpulse.v1` service: prost, with smaller
//! initial buffers than tonic's 8 KiB.
//!
//! tonic gives every stream an encode buffer and a decode buffer of the
//! codec's initial size, and keeps them for as long as the stream lives.
//! An agent holds one session stream for days, and what the collector
//! sends on it is mostly Acks of a few dozen bytes: 8 KiB each way was
//! about 16 KB of a connected agent's memory on the collector. Buffers
//! still grow to fit a larger message; they start small.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Initial encode buffer per stream: an Ack, a job, a page of a listing
/// starts to fit; larger messages grow it.
const ENCODE_BUFFER: usize = 1024;
/// Initial decode buffer per stream: one 4 KiB HTTP/2 frame (the
/// collector's stream window); a report part and the frame behind it grow
/// it to 8 KiB.
const DECODE_BUFFER: usize = 4 * 1024;
/// tonic's default: how much a stream encodes before it yields.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// [`ProstCodec`] with [`ENCODE_BUFFER`] and [`DECODE_BUFFER`]; the
/// generated clients and servers use it (`cargo xtask codegen`).
#[derive(Debug, Clone)]
pub struct SmallBufferCodec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for SmallBufferCodec<T, U> {
    fn default() -> Self {
        Self {
            _types: PhantomData,
        }
    }
}

impl<T, U> Codec for SmallBufferCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::new(ENCODE_BUFFER, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(BufferSettings::new(DECODE_BUFFER, YIELD_THRESHOLD))
    }
}
