//! The string columns of a row group (`query`, `metric` and the label
//! map's `key` and `value`), encoded here into finished column chunks that
//! the row group takes as they are (`append_column`).
//!
//! Why not parquet's column writer: it looks every value up in its
//! dictionary (a hash and a byte compare per row and column) and compares
//! it with the running minimum and maximum. With about six strings a row,
//! that was half of a Parquet export's client CPU (`perf` of the 6 h
//! Parquet export of `scripts/bench-export.sh`: 51% of the samples under
//! the string columns). Here a series' strings are looked up once per
//! segment of rows, whose rows then repeat the same dictionary indices.
//!
//! What is written is what that writer wrote with its defaults: after one
//! PLAIN dictionary page, format v1 data pages of at most [`PAGE_ROWS`]
//! rows or about [`PAGE_BYTES`] bytes, cut between rows, their indices in
//! the RLE / bit-packing hybrid, their levels RLE; a chunk whose
//! dictionary would pass [`DICTIONARY_BYTES`] is written PLAIN from its
//! first page (that writer switched to PLAIN partway through it).
//! `query` and `metric` carry min/max statistics and a column index,
//! truncated to [`TRUNCATE_BYTES`] as that writer truncates them; the
//! map's leaves carry neither (readers do not prune row groups on a map
//! entry). Every chunk has an offset index.

use super::hybrid::Hybrid;
use super::Segment;
use ::parquet::basic::{BoundaryOrder, Compression, Encoding, Type};
use ::parquet::column::page::{CompressedPage, Page, PageWriter};
use ::parquet::column::writer::ColumnCloseResult;
use ::parquet::data_type::ByteArray;
use ::parquet::errors::ParquetError;
use ::parquet::file::metadata::{ColumnChunkMetaData, ColumnIndexBuilder, OffsetIndexBuilder};
use ::parquet::file::page_index::column_index::ColumnIndexMetaData;
use ::parquet::file::statistics::{Statistics, ValueStatistics};
use ::parquet::file::writer::{SerializedPageWriter, TrackedWrite};
use ::parquet::schema::types::ColumnDescPtr;
use bytes::Bytes;
use std::collections::HashMap;

/// Rows per data page at most (the column writer's default row limit).
pub(super) const PAGE_ROWS: usize = 20_000;
/// A data page is cut once its encoded values and levels pass this (the
/// column writer's default page size).
const PAGE_BYTES: usize = 1024 * 1024;
/// A larger dictionary is not used: the chunk is written PLAIN (the column
/// writer's default dictionary page limit).
pub(super) const DICTIONARY_BYTES: usize = 1024 * 1024;
/// Statistics and column index bounds longer than this are truncated (the
/// column writer's default for both).
pub(super) const TRUNCATE_BYTES: usize = 64;

/// Which strings of a segment a column holds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum StringColumn {
    Query,
    Metric,
    LabelKeys,
    LabelValues,
}

impl StringColumn {
    fn entries(self, segment: &Segment) -> &[ByteArray] {
        match self {
            StringColumn::Query => std::slice::from_ref(&segment.query),
            StringColumn::Metric => std::slice::from_ref(&segment.metric),
            StringColumn::LabelKeys => &segment.keys,
            StringColumn::LabelValues => &segment.values,
        }
    }

    /// A leaf of the `labels` map: repeated, with levels, no statistics.
    fn map_leaf(self) -> bool {
        matches!(self, StringColumn::LabelKeys | StringColumn::LabelValues)
    }
}

/// One column chunk of a row group, ready for `append_column`.
pub(super) struct EncodedChunk {
    pub bytes: Bytes,
    pub close: ColumnCloseResult,
}

/// Encodes `column` of the rows of `segments`, in order, as one chunk
/// described by `descr`.
pub(super) fn encode(
    descr: ColumnDescPtr,
    column: StringColumn,
    segments: &[Segment],
    compression: Compression,
) -> Result<EncodedChunk, ParquetError> {
    let dictionary = Dictionary::build(column, segments);
    let width = (dictionary.bytes <= DICTIONARY_BYTES).then(|| dictionary.width());
    let mut out = TrackedWrite::new(Vec::new());
    let mut writer = SerializedPageWriter::new(&mut out);
    let mut chunk = ChunkBuilder::new(column, compression, width.is_some());
    if width.is_some() {
        let spec = writer.write_page(dictionary.page(compression)?)?;
        chunk.add_size(spec.compressed_size, spec.uncompressed_size);
    }
    let mut page = PageBuilder::new(column.map_leaf(), width);
    for (segment, indices) in segments.iter().zip(dictionary.indices.by_segment()) {
        let entries = column.entries(segment);
        let mut rows = segment.rows;
        while rows > 0 {
            let take = page.room_for(entries, rows);
            page.push(entries, indices, take);
            rows -= take;
            if page.full() {
                chunk.data_page(&mut writer, page.take())?;
            }
        }
    }
    if page.rows > 0 || chunk.first_data_page.is_none() {
        chunk.data_page(&mut writer, page.take())?;
    }
    writer.close()?;
    let bytes = Bytes::from(out.into_inner()?);
    let close = chunk.finish(descr, bytes.len() as u64)?;
    Ok(EncodedChunk { bytes, close })
}

/// The distinct strings of a chunk in the order they first appear, and each
/// segment's entries as indices into them.
struct Dictionary<'a> {
    values: Vec<&'a [u8]>,
    /// PLAIN size of `values`: a 4-byte length and the bytes of each.
    bytes: usize,
    indices: SegmentIndices,
}

impl<'a> Dictionary<'a> {
    fn build(column: StringColumn, segments: &'a [Segment]) -> Dictionary<'a> {
        let mut lookup: HashMap<&'a [u8], u32> = HashMap::new();
        let mut values = Vec::new();
        let mut bytes = 0usize;
        let mut indices = SegmentIndices::default();
        for segment in segments {
            for entry in column.entries(segment) {
                let data = entry.data();
                let index = *lookup.entry(data).or_insert_with(|| {
                    values.push(data);
                    bytes += 4 + data.len();
                    (values.len() - 1) as u32
                });
                indices.flat.push(index);
            }
            indices.ends.push(indices.flat.len());
        }
        Dictionary {
            values,
            bytes,
            indices,
        }
    }

    /// Bits per index: enough for the largest (0 for a single value, as
    /// the column writer writes it).
    fn width(&self) -> u8 {
        bits_for(self.values.len().saturating_sub(1) as u32)
    }

    fn page(&self, compression: Compression) -> Result<CompressedPage, ParquetError> {
        let mut plain = Vec::with_capacity(self.bytes);
        for value in &self.values {
            push_plain(&mut plain, value);
        }
        let uncompressed = plain.len();
        let page = Page::DictionaryPage {
            buf: compress(compression, plain)?,
            num_values: self.values.len() as u32,
            encoding: Encoding::PLAIN,
            is_sorted: false,
        };
        Ok(CompressedPage::new(page, uncompressed))
    }
}

/// Each segment's entries as dictionary indices, end to end.
#[derive(Default)]
struct SegmentIndices {
    flat: Vec<u32>,
    ends: Vec<usize>,
}

impl SegmentIndices {
    fn by_segment(&self) -> impl Iterator<Item = &[u32]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|(a, &b)| &self.flat[a..b])
    }
}

/// How a page stores its values.
enum Values {
    /// Dictionary indices.
    Indices(Hybrid),
    Plain(Vec<u8>),
}

/// The data page being filled.
struct PageBuilder<'a> {
    map_leaf: bool,
    width: Option<u8>,
    values: Values,
    repetition: Hybrid,
    definition: Hybrid,
    /// `[0, 1, 1, ..]`: the repetition levels of a row, one per entry.
    row_repetition: Vec<u32>,
    rows: usize,
    levels: usize,
    /// Bytes of the strings the page's values hold (size statistics).
    string_bytes: usize,
    /// Smallest and largest value of the page (plain columns only).
    bounds: Option<(&'a [u8], &'a [u8])>,
}

/// A full data page, not yet compressed.
struct FinishedPage<'a> {
    buf: Vec<u8>,
    encoding: Encoding,
    levels: usize,
    rows: usize,
    string_bytes: usize,
    bounds: Option<(&'a [u8], &'a [u8])>,
}

impl<'a> PageBuilder<'a> {
    /// `width`: bits per dictionary index, or `None` for PLAIN values.
    fn new(map_leaf: bool, width: Option<u8>) -> PageBuilder<'a> {
        PageBuilder {
            map_leaf,
            width,
            values: match width {
                Some(w) => Values::Indices(Hybrid::new(w)),
                None => Values::Plain(Vec::new()),
            },
            repetition: Hybrid::new(1),
            definition: Hybrid::new(1),
            row_repetition: Vec::new(),
            rows: 0,
            levels: 0,
            string_bytes: 0,
            bounds: None,
        }
    }

    /// Encoded size so far: what decides when the page is full.
    fn bytes(&self) -> usize {
        let values = match &self.values {
            Values::Indices(h) => h.len(),
            Values::Plain(p) => p.len(),
        };
        values + self.repetition.len() + self.definition.len()
    }

    fn full(&self) -> bool {
        self.rows >= PAGE_ROWS || self.bytes() >= PAGE_BYTES
    }

    /// How many of `rows` rows of `entries` go into this page: at least
    /// one, and no more than its row and byte limits leave room for.
    fn room_for(&self, entries: &[ByteArray], rows: usize) -> usize {
        let row_bytes = match self.width {
            Some(w) => (entries.len() * (usize::from(w) + 2)).div_ceil(8),
            None => entries.iter().map(|e| 4 + e.len()).sum(),
        };
        let by_bytes = PAGE_BYTES.saturating_sub(self.bytes()) / row_bytes.max(1);
        rows.min(PAGE_ROWS - self.rows).min(by_bytes.max(1))
    }

    /// Adds `rows` rows holding `entries`, whose dictionary indices are
    /// `indices`; a plain column's page keeps its bounds.
    fn push(&mut self, entries: &'a [ByteArray], indices: &[u32], rows: usize) {
        self.push_levels(entries.len(), rows);
        if !self.map_leaf {
            self.widen_bounds(entries);
        }
        match &mut self.values {
            Values::Indices(hybrid) => hybrid.pattern(indices, rows),
            Values::Plain(plain) => {
                let start = plain.len();
                for entry in entries {
                    push_plain(plain, entry.data());
                }
                let row = start..plain.len();
                for _ in 1..rows {
                    plain.extend_from_within(row.clone());
                }
            }
        }
        let strings: usize = entries.iter().map(ByteArray::len).sum();
        self.string_bytes += strings * rows;
    }

    fn push_levels(&mut self, entries: usize, rows: usize) {
        self.rows += rows;
        if !self.map_leaf {
            self.levels += rows;
            return;
        }
        if entries == 0 {
            // A row without labels: one level pair (0, 0), no value.
            self.repetition.repeat(0, rows);
            self.definition.repeat(0, rows);
            self.levels += rows;
            return;
        }
        if self.row_repetition.len() != entries {
            self.row_repetition.clear();
            self.row_repetition.push(0);
            self.row_repetition.resize(entries, 1);
        }
        self.repetition.pattern(&self.row_repetition, rows);
        self.definition.repeat(1, entries * rows);
        self.levels += entries * rows;
    }

    fn widen_bounds(&mut self, entries: &'a [ByteArray]) {
        for entry in entries {
            let v = entry.data();
            self.bounds = Some(match self.bounds {
                None => (v, v),
                Some((min, max)) => (min.min(v), max.max(v)),
            });
        }
    }

    /// The page as it stands, and a fresh one in its place.
    fn take(&mut self) -> FinishedPage<'a> {
        let fresh = PageBuilder::new(self.map_leaf, self.width);
        let page = std::mem::replace(self, fresh);
        let mut buf = Vec::new();
        if page.map_leaf {
            push_levels(&mut buf, page.repetition.finish());
            push_levels(&mut buf, page.definition.finish());
        }
        let encoding = match page.values {
            Values::Indices(hybrid) => {
                buf.push(hybrid.width());
                buf.extend_from_slice(&hybrid.finish());
                Encoding::RLE_DICTIONARY
            }
            Values::Plain(plain) => {
                buf.extend_from_slice(&plain);
                Encoding::PLAIN
            }
        };
        FinishedPage {
            buf,
            encoding,
            levels: page.levels,
            rows: page.rows,
            string_bytes: page.string_bytes,
            bounds: page.bounds,
        }
    }
}

/// What the chunk's metadata and indexes need from its pages.
struct ChunkBuilder<'a> {
    compression: Compression,
    dictionary: bool,
    compressed: usize,
    uncompressed: usize,
    first_data_page: Option<u64>,
    levels: usize,
    rows: usize,
    string_bytes: usize,
    offsets: OffsetIndexBuilder,
    /// For `query` and `metric`: the chunk's bounds so far (statistics),
    /// the last page's, whether pages only rose or only fell, and the
    /// column index.
    bounds: Option<Bounds<'a>>,
}

struct Bounds<'a> {
    chunk: Option<(&'a [u8], &'a [u8])>,
    last_page: Option<(&'a [u8], &'a [u8])>,
    ascending: bool,
    descending: bool,
    index: ColumnIndexBuilder,
}

impl<'a> ChunkBuilder<'a> {
    fn new(column: StringColumn, compression: Compression, dictionary: bool) -> Self {
        let bounds = (!column.map_leaf()).then(|| Bounds {
            chunk: None,
            last_page: None,
            ascending: true,
            descending: true,
            index: ColumnIndexBuilder::new(Type::BYTE_ARRAY),
        });
        ChunkBuilder {
            compression,
            dictionary,
            compressed: 0,
            uncompressed: 0,
            first_data_page: None,
            levels: 0,
            rows: 0,
            string_bytes: 0,
            offsets: OffsetIndexBuilder::new(),
            bounds,
        }
    }

    fn add_size(&mut self, compressed: usize, uncompressed: usize) {
        self.compressed += compressed;
        self.uncompressed += uncompressed;
    }

    fn data_page(
        &mut self,
        writer: &mut impl PageWriter,
        page: FinishedPage<'a>,
    ) -> Result<(), ParquetError> {
        let uncompressed = page.buf.len();
        let data = Page::DataPage {
            buf: compress(self.compression, page.buf)?,
            num_values: u32::try_from(page.levels)
                .map_err(|_| ParquetError::General("too many values for one page".into()))?,
            encoding: page.encoding,
            def_level_encoding: Encoding::RLE,
            rep_level_encoding: Encoding::RLE,
            statistics: None,
        };
        let spec = writer.write_page(CompressedPage::new(data, uncompressed))?;
        self.add_size(spec.compressed_size, spec.uncompressed_size);
        self.first_data_page.get_or_insert(spec.offset);
        self.levels += page.levels;
        self.rows += page.rows;
        self.string_bytes += page.string_bytes;
        self.offsets
            .append_offset_and_size(spec.offset as i64, spec.compressed_size as i32);
        self.offsets.append_row_count(page.rows as i64);
        self.offsets
            .append_unencoded_byte_array_data_bytes(Some(page.string_bytes as i64));
        if let (Some(bounds), Some(page_bounds)) = (&mut self.bounds, page.bounds) {
            bounds.add_page(page_bounds);
        }
        Ok(())
    }

    fn finish(self, descr: ColumnDescPtr, bytes: u64) -> Result<ColumnCloseResult, ParquetError> {
        let encodings = if self.dictionary {
            vec![Encoding::PLAIN, Encoding::RLE, Encoding::RLE_DICTIONARY]
        } else {
            vec![Encoding::PLAIN, Encoding::RLE]
        };
        let mut metadata = ColumnChunkMetaData::builder(descr)
            .set_compression(self.compression)
            .set_encodings(encodings)
            .set_num_values(self.levels as i64)
            .set_total_compressed_size(self.compressed as i64)
            .set_total_uncompressed_size(self.uncompressed as i64)
            .set_data_page_offset(self.first_data_page.unwrap_or(0) as i64)
            .set_dictionary_page_offset(self.dictionary.then_some(0))
            .set_unencoded_byte_array_data_bytes(Some(self.string_bytes as i64));
        let mut column_index = None;
        if let Some(bounds) = self.bounds {
            if let Some(statistics) = bounds.statistics() {
                metadata = metadata.set_statistics(statistics);
            }
            column_index = Some(bounds.column_index()?);
        }
        Ok(ColumnCloseResult {
            bytes_written: bytes,
            rows_written: self.rows as u64,
            metadata: metadata.build()?,
            bloom_filter: None,
            column_index,
            offset_index: Some(self.offsets.build()),
        })
    }
}

impl<'a> Bounds<'a> {
    /// Notes a page's bounds as the column writer does: its minimum and
    /// maximum in the column index, and whether the pages rise or fall.
    fn add_page(&mut self, (min, max): (&'a [u8], &'a [u8])) {
        if let Some((last_min, last_max)) = self.last_page {
            self.ascending &= last_min <= min && last_max <= max;
            self.descending &= min <= last_min && max <= last_max;
        }
        self.last_page = Some((min, max));
        self.chunk = Some(match self.chunk {
            None => (min, max),
            Some((a, b)) => (a.min(min), b.max(max)),
        });
        let (min, _) = truncate_min(min);
        let (max, _) = truncate_max(max);
        self.index.append(false, min, max, 0, None);
    }

    fn statistics(&self) -> Option<Statistics> {
        let (min, max) = self.chunk?;
        let (min, min_exact) = truncate_min(min);
        let (max, max_exact) = truncate_max(max);
        let stats = ValueStatistics::new(
            Some(ByteArray::from(min)),
            Some(ByteArray::from(max)),
            None,
            Some(0),
            false,
        )
        .with_min_is_exact(min_exact)
        .with_max_is_exact(max_exact);
        Some(Statistics::ByteArray(stats))
    }

    fn column_index(mut self) -> Result<ColumnIndexMetaData, ParquetError> {
        self.index
            .set_boundary_order(match (self.ascending, self.descending) {
                (true, _) => BoundaryOrder::ASCENDING,
                (false, true) => BoundaryOrder::DESCENDING,
                (false, false) => BoundaryOrder::UNORDERED,
            });
        self.index.build()
    }
}

/// A lower bound of `value` of at most [`TRUNCATE_BYTES`] (cut at a
/// character boundary), and whether it is `value` itself.
fn truncate_min(value: &[u8]) -> (Vec<u8>, bool) {
    if value.len() <= TRUNCATE_BYTES {
        return (value.to_vec(), true);
    }
    let cut = match std::str::from_utf8(value) {
        Ok(s) => (1..=TRUNCATE_BYTES).rfind(|&i| s.is_char_boundary(i)),
        Err(_) => Some(TRUNCATE_BYTES),
    };
    match cut {
        Some(cut) => (value[..cut].to_vec(), false),
        None => (value.to_vec(), true),
    }
}

/// An upper bound of `value` of at most [`TRUNCATE_BYTES`]: a prefix with
/// its last character incremented (without growing it in bytes), or
/// `value` itself when no prefix can be; and whether it is `value`.
fn truncate_max(value: &[u8]) -> (Vec<u8>, bool) {
    if value.len() <= TRUNCATE_BYTES {
        return (value.to_vec(), true);
    }
    let bound = match std::str::from_utf8(value) {
        Ok(s) => (TRUNCATE_BYTES.saturating_sub(3)..=TRUNCATE_BYTES)
            .rfind(|&i| s.is_char_boundary(i))
            .and_then(|cut| increment_utf8(&s[..cut])),
        Err(_) => increment_bytes(&value[..TRUNCATE_BYTES]),
    };
    match bound {
        Some(bound) => (bound, false),
        None => (value.to_vec(), true),
    }
}

/// `s` with its last character that can be incremented within its byte
/// length incremented, and what followed it dropped.
fn increment_utf8(s: &str) -> Option<Vec<u8>> {
    s.char_indices().rev().find_map(|(i, c)| {
        let next = char::from_u32(c as u32 + 1).filter(|n| n.len_utf8() == c.len_utf8())?;
        let mut out = s.as_bytes()[..i + c.len_utf8()].to_vec();
        next.encode_utf8(&mut out[i..]);
        Some(out)
    })
}

/// `b` incremented as a big-endian number, carrying; `None` if all 0xFF.
fn increment_bytes(b: &[u8]) -> Option<Vec<u8>> {
    let mut out = b.to_vec();
    for byte in out.iter_mut().rev() {
        let (next, overflow) = byte.overflowing_add(1);
        *byte = next;
        if !overflow {
            return Some(out);
        }
    }
    None
}

/// Appends a PLAIN byte array: its length as 4 bytes little-endian, then it.
fn push_plain(out: &mut Vec<u8>, value: &[u8]) {
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

/// Appends format v1 levels: their encoded length as 4 bytes little-endian, then them.
fn push_levels(out: &mut Vec<u8>, encoded: Vec<u8>) {
    out.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
    out.extend_from_slice(&encoded);
}

fn bits_for(max: u32) -> u8 {
    (u32::BITS - max.leading_zeros()) as u8
}

fn compress(compression: Compression, data: Vec<u8>) -> Result<Bytes, ParquetError> {
    let external = |e: Box<dyn std::error::Error + Send + Sync>| ParquetError::External(e);
    match compression {
        Compression::UNCOMPRESSED => Ok(Bytes::from(data)),
        Compression::SNAPPY => snap::raw::Encoder::new()
            .compress_vec(&data)
            .map(Bytes::from)
            .map_err(|e| external(Box::new(e))),
        Compression::ZSTD(level) => zstd::bulk::compress(&data, level.compression_level())
            .map(Bytes::from)
            .map_err(|e| external(Box::new(e))),
        other => Err(ParquetError::NYI(format!(
            "string columns compressed with {other}"
        ))),
    }
}

#[cfg(test)]
mod tests;
