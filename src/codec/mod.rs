//! Wire formats shared by sources, sinks and the receiver. Uses only
//! `crate::model`; nothing here does network I/O.
//!
//! **Prometheus remote write 1.0** ([`remote_write`]): the HTTP body is a
//! protobuf `WriteRequest` (repeated `TimeSeries`, each with repeated
//! `Label{name, value}` and `Sample{value: double, timestamp: int64 ms}`),
//! compressed as **one raw snappy block**, not the framed/stream format. The
//! sender sets `Content-Encoding: snappy`, `Content-Type:
//! application/x-protobuf` and `X-Prometheus-Remote-Write-Version: 0.1.0`.
//! The VictoriaMetrics remote-write protocol sends the same protobuf as one
//! zstd frame (`Content-Encoding: zstd`); decoding takes either.
//! Values travel as IEEE-754 bits, so the staleness marker
//! (`0x7ff0000000000002`) arrives exactly as sent. The encoder writes the
//! protobuf by hand from borrowed series into reused buffers (no owned
//! message tree per request); the decoder uses the `prost` structs and caps the
//! decompressed size before allocating.
//!
//! **Prometheus remote read 1.0** ([`remote_read`]): a `ReadRequest` in the
//! same snappy block framing, answered with `SAMPLES` (a `ReadResponse`
//! holding remote-write `TimeSeries`); breach captures read raw samples out
//! of Prometheus this way.
//!
//! **VictoriaMetrics JSON lines** ([`vm_json`]), what `/api/v1/export` prints
//! and `/api/v1/import` reads, one series per line:
//! `{"metric":{"__name__":"up","job":"a"},"values":[1,0.5],"timestamps":[1700000000000,1700000015000]}`.
//! Values print as VictoriaMetrics prints them: integral values without a
//! fraction, others in shortest round-trip form without an exponent. NaN and
//! infinities are written as the bare tokens `NaN`, `+Inf`, `-Inf`: not strict
//! JSON, but the one spelling the import of every VictoriaMetrics version
//! accepts (1.79 refuses `null` and quoted values, which its own and newer
//! exports use). Reading accepts all of them, and a NaN read back is the
//! staleness marker, the only NaN VictoriaMetrics stores.
//!
//! **VictoriaMetrics native export** ([`vm_native`]): the storage's own
//! blocks from `/api/v1/export/native`, decoded to the samples the JSON
//! export would print, for a fraction of the server's CPU.

pub mod remote_read;
pub mod remote_write;
mod remote_write_decode;
pub mod vm_json;
pub mod vm_native;
pub mod vm_native_write;

pub use remote_write::{
    decode_write_request, decode_write_request_into, decode_write_request_with_limit,
    encode_write_request, split_for_limit, Compression, RemoteWriteEncoder,
};
pub use vm_json::{
    parse_vm_json_line, write_vm_json_decimal_parts, write_vm_json_line, write_vm_json_lines,
    write_vm_json_metric, write_vm_json_parts, VmJsonLineReader,
};

/// What can go wrong reading or writing a wire format. Callers match on it:
/// everything but `Io` means the input itself is bad and retrying the same
/// bytes will fail again.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error(
        "remote write body uses the framed snappy format (it starts with the stream identifier \
         `sNaPpY`); remote write 1.0 sends one raw snappy block: compress with the block API \
         (snappy.Encode in Go, snap::raw in Rust), not a stream writer"
    )]
    FramedSnappy,

    #[error(
        "remote write body decompresses to {decoded_bytes} bytes, over the {limit_bytes}-byte \
         limit; send smaller batches (Prometheus: queue_config.max_samples_per_send, vmagent: \
         -remoteWrite.maxBlockSize)"
    )]
    BodyTooLarge {
        decoded_bytes: usize,
        limit_bytes: usize,
    },

    #[error("remote write body is not a valid raw snappy block: {0}")]
    Snappy(String),

    #[error("remote write body is not a valid zstd frame: {0}")]
    Zstd(String),

    #[error("remote write body is not a valid protobuf WriteRequest: {0}")]
    Protobuf(String),

    /// A remote read answer that cannot be used (too large, not snappy).
    #[error("remote read answer: {0}")]
    RemoteRead(String),

    #[error(
        "cannot snappy-compress a {size}-byte remote write request: {reason}; send smaller batches"
    )]
    Compress { size: usize, reason: String },

    #[error("{}invalid VictoriaMetrics JSON line: {reason}", line_prefix(*line_number))]
    VmJson {
        /// 1-based, when the line came from a stream.
        line_number: Option<u64>,
        reason: String,
    },

    #[error(
        "line {line_number}: longer than the {limit_bytes}-byte line limit; export with \
         `max_rows_per_line` (VictoriaMetrics /api/v1/export) to keep lines short, or raise the limit"
    )]
    LineTooLong {
        line_number: u64,
        limit_bytes: usize,
    },

    #[error("reading line {line_number}: {error}")]
    Io {
        line_number: u64,
        error: std::io::Error,
    },
}

fn line_prefix(line_number: Option<u64>) -> String {
    line_number.map_or_else(String::new, |n| format!("line {n}: "))
}
