use super::*;

#[test]
fn bounds_are_truncated_as_the_column_writer_truncates_them() {
    let short = b"abc";
    assert_eq!(truncate_min(short), (short.to_vec(), true));
    assert_eq!(truncate_max(short), (short.to_vec(), true));
    let long = "a".repeat(63) + "bcd";
    assert_eq!(
        truncate_min(long.as_bytes()),
        (("a".repeat(63) + "b").into_bytes(), false)
    );
    assert_eq!(
        truncate_max(long.as_bytes()),
        (("a".repeat(63) + "c").into_bytes(), false)
    );
    // A two-byte character straddling the cut is left out of both.
    let straddling = "a".repeat(63) + "é" + "z";
    assert_eq!(
        truncate_min(straddling.as_bytes()).0,
        "a".repeat(63).into_bytes()
    );
    assert_eq!(
        truncate_max(straddling.as_bytes()).0,
        ("a".repeat(62) + "b").into_bytes()
    );
    // Nothing to increment within its byte length: the value itself.
    let top = "\u{10FFFF}".repeat(20);
    assert_eq!(
        truncate_max(top.as_bytes()),
        (top.as_bytes().to_vec(), true)
    );
    assert_eq!(increment_bytes(&[0x01, 0xff]), Some(vec![0x02, 0x00]));
    assert_eq!(increment_bytes(&[0xff]), None);
}

mod against_the_column_writer {
    //! The chunks read back as parquet's own column writer's do: the same
    //! rows, statistics and index bounds, for every shape of segment.
    use super::super::super::Segment;
    use super::*;
    use crate::model::Labels;
    use ::parquet::data_type::ByteArrayType;
    use ::parquet::file::properties::{EnabledStatistics, WriterProperties};
    use ::parquet::file::reader::{FileReader, SerializedFileReader};
    use ::parquet::file::serialized_reader::ReadOptionsBuilder;
    use ::parquet::file::writer::SerializedFileWriter;
    use ::parquet::schema::parser::parse_message_type;
    use ::parquet::schema::types::ColumnPath;
    use std::sync::Arc;

    /// The file's schema without its typed columns: the string columns only.
    fn strings_schema() -> String {
        let typed = ["int64", "double", "boolean"];
        let lines = super::super::super::SCHEMA.lines();
        let kept: Vec<&str> = lines
            .filter(|l| !typed.iter().any(|t| l.contains(t)))
            .collect();
        kept.join("\n")
    }

    const COLUMNS: [StringColumn; 4] = [
        StringColumn::Query,
        StringColumn::Metric,
        StringColumn::LabelKeys,
        StringColumn::LabelValues,
    ];

    fn segment(query: &str, pairs: &[(&str, &str)], rows: usize) -> Segment {
        let mut segment = Segment::new(query, &Labels::from_pairs(pairs.iter().copied()));
        segment.rows = rows;
        segment
    }

    fn properties(compression: Compression) -> Arc<WriterProperties> {
        let leaf = |l: &str| ColumnPath::new(vec!["labels".into(), "key_value".into(), l.into()]);
        Arc::new(
            WriterProperties::builder()
                .set_compression(compression)
                .set_column_statistics_enabled(leaf("key"), EnabledStatistics::None)
                .set_column_statistics_enabled(leaf("value"), EnabledStatistics::None)
                .build(),
        )
    }

    /// One row group of `segments`, its string chunks from [`encode`] (or,
    /// for the reference, from parquet's column writer, every row expanded).
    fn write(segments: &[Segment], compression: Compression, ours: bool) -> Bytes {
        let schema = Arc::new(parse_message_type(&strings_schema()).unwrap());
        let mut file =
            SerializedFileWriter::new(Vec::new(), schema, properties(compression)).unwrap();
        let descrs: Vec<_> = (0..4).map(|i| file.schema_descr().column(i)).collect();
        let mut group = file.next_row_group().unwrap();
        for (column, descr) in COLUMNS.into_iter().zip(descrs) {
            if ours {
                let chunk = encode(descr, column, segments, compression).unwrap();
                group.append_column(&chunk.bytes, chunk.close).unwrap();
                continue;
            }
            let mut writer = group.next_column().unwrap().unwrap();
            let (mut values, mut def, mut rep) = (Vec::new(), Vec::new(), Vec::new());
            for s in segments {
                let entries = column.entries(s);
                for _ in 0..s.rows {
                    values.extend(entries.iter().cloned());
                    if column.map_leaf() && entries.is_empty() {
                        def.push(0);
                        rep.push(0);
                    }
                    for i in 0..entries.len() {
                        def.push(1);
                        rep.push(i16::from(i != 0));
                    }
                }
            }
            let levels = column.map_leaf().then_some((&def[..], &rep[..]));
            writer
                .typed::<ByteArrayType>()
                .write_batch(&values, levels.map(|l| l.0), levels.map(|l| l.1))
                .unwrap();
            writer.close().unwrap();
        }
        group.close().unwrap();
        Bytes::from(file.into_inner().unwrap())
    }

    fn rows(file: &Bytes) -> Vec<String> {
        let reader = SerializedFileReader::new(file.clone()).unwrap();
        let rows = reader.get_row_iter(None).unwrap();
        rows.map(|r| format!("{:?}", r.unwrap())).collect()
    }

    /// Per column: statistics, value count, and the column index's bounds
    /// over all pages and order.
    fn described(file: &Bytes) -> Vec<String> {
        let options = ReadOptionsBuilder::new().with_page_index().build();
        let reader = SerializedFileReader::new_with_options(file.clone(), options).unwrap();
        let metadata = reader.metadata();
        let group = metadata.row_group(0);
        let index = metadata.page_index_for_row_group(0);
        (0..4)
            .map(|i| {
                let c = group.column(i);
                let s = c.statistics();
                let stats = s.map(|s| {
                    (
                        s.min_bytes_opt().map(<[u8]>::to_vec),
                        s.max_bytes_opt().map(<[u8]>::to_vec),
                        s.min_is_exact(),
                        s.max_is_exact(),
                        s.null_count_opt(),
                    )
                });
                let bounds = index.column_index(i).map(|ci| {
                    let ColumnIndexMetaData::BYTE_ARRAY(b) = ci else {
                        panic!("not bytes")
                    };
                    let pages = b.min_values_iter().count();
                    let min = (0..pages)
                        .filter_map(|p| b.min_value(p))
                        .min()
                        .map(<[u8]>::to_vec);
                    let max = (0..pages)
                        .filter_map(|p| b.max_value(p))
                        .max()
                        .map(<[u8]>::to_vec);
                    (min, max, ci.get_boundary_order())
                });
                format!(
                    "{}: {stats:?} values {} index {bounds:?}",
                    c.column_path(),
                    c.num_values()
                )
            })
            .collect()
    }

    use ::parquet::file::page_index::column_index::ColumnIndexMetaData;

    fn assert_same(segments: &[Segment], compression: Compression) -> Bytes {
        let ours = write(segments, compression, true);
        let theirs = write(segments, compression, false);
        let (ours_rows, theirs_rows) = (rows(&ours), rows(&theirs));
        assert_eq!(ours_rows.len(), theirs_rows.len(), "rows");
        if let Some(i) = (0..ours_rows.len()).find(|&i| ours_rows[i] != theirs_rows[i]) {
            let cut = |s: &str| s.chars().take(300).collect::<String>();
            panic!(
                "row {i}: {} against {}",
                cut(&ours_rows[i]),
                cut(&theirs_rows[i])
            );
        }
        assert_eq!(described(&ours), described(&theirs));
        ours
    }

    #[test]
    fn every_shape_of_segment() {
        let long_query = format!("sum by (job) (rate({}[5m]))", "é".repeat(40));
        let long_metric = "ü".repeat(40);
        let segments = vec![
            segment(
                "up",
                &[("__name__", "m"), ("job", "a"), ("instance", "x")],
                25_000,
            ),
            segment("up", &[("__name__", "m")], 3),
            segment("up", &[("__name__", "m"), ("job", "a")], 1),
            segment(&long_query, &[("__name__", &long_metric), ("k", "v")], 7),
            segment(
                "up",
                &[("__name__", "a"), ("z", "1"), ("y", "2"), ("x", "3")],
                100,
            ),
            segment(
                "up",
                &[("__name__", "m"), ("job", "a"), ("instance", "x")],
                5,
            ),
            segment(
                "up",
                &[("__name__", "m"), ("job", "b"), ("instance", "x")],
                19_999,
            ),
            segment("", &[], 2),
        ];
        for compression in [
            Compression::SNAPPY,
            Compression::ZSTD(Default::default()),
            Compression::UNCOMPRESSED,
        ] {
            let file = assert_same(&segments, compression);
            // 45,117 rows: pages of at most PAGE_ROWS, as an offset index says.
            let options = ReadOptionsBuilder::new().with_page_index().build();
            let reader = SerializedFileReader::new_with_options(file, options).unwrap();
            let index = reader.metadata().page_index_for_row_group(0);
            for column in 0..4 {
                let pages = index.offset_index(column).unwrap().page_locations();
                let firsts: Vec<i64> = pages.iter().map(|p| p.first_row_index).collect();
                assert_eq!(firsts, [0, 20_000, 40_000], "column {column}");
            }
        }
    }

    #[test]
    fn a_dictionary_too_large_is_left_out() {
        let long = "v".repeat(500);
        let segments: Vec<Segment> = (0..2_500)
            .map(|i| segment("q", &[("__name__", "m"), ("k", &format!("{i}{long}"))], 3))
            .collect();
        let file = assert_same(&segments, Compression::SNAPPY);
        let reader = SerializedFileReader::new(file).unwrap();
        let group = reader.metadata().row_group(0);
        let values = group.column(3);
        assert!(values.dictionary_page_offset().is_none());
        assert!(group.column(2).dictionary_page_offset().is_some());
    }

    #[test]
    fn one_row() {
        assert_same(
            &[segment("q", &[("__name__", "m"), ("a", "b")], 1)],
            Compression::SNAPPY,
        );
    }
}
