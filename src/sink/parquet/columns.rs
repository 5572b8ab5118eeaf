//! The schema and the column buffers of a row group, and writing a row group.

use super::*;

/// EVE fields that only this sink reads, spelled as in Suricata's schema.
pub(super) const TIMESTAMP: &str = "timestamp";
pub(super) const APP_PROTO: &str = "app_proto";
pub(super) const IN_IFACE: &str = "in_iface";
pub(super) const COMMUNITY_ID: &str = "community_id";
pub(super) const HOST: &str = "host";
/// The column with the whole event.
pub(super) const EVENT: &str = "event";

/// Rows buffered before they are written as one row group.
pub(super) const ROW_GROUP_ROWS: usize = 16_384;
/// String data (`event` and the string columns) buffered before a row group is written,
/// whatever its row count.
pub(super) const ROW_GROUP_BYTES: usize = 16 << 20;

/// Where a column's values come from in the row buffer.
#[derive(Clone, Copy)]
pub(super) enum Slot {
    Timestamp,
    /// 0: `src_port`, 1: `dest_port`.
    Port(usize),
    FlowId,
    /// Index into [`Rows::strs`].
    Str(usize),
    Event,
}

pub(super) const STR_EVENT_TYPE: usize = 0;
pub(super) const STR_COLUMNS: usize = 8;

/// The schema, in column order; [`schema_text`] and [`write_group`] both follow it.
pub(super) const COLUMNS: [(&str, Slot); 13] = [
    (TIMESTAMP, Slot::Timestamp),
    (fields::EVENT_TYPE, Slot::Str(STR_EVENT_TYPE)),
    (fields::SRC_IP, Slot::Str(1)),
    (fields::SRC_PORT, Slot::Port(0)),
    (fields::DEST_IP, Slot::Str(2)),
    (fields::DEST_PORT, Slot::Port(1)),
    (fields::PROTO, Slot::Str(3)),
    (fields::FLOW_ID, Slot::FlowId),
    (APP_PROTO, Slot::Str(4)),
    (IN_IFACE, Slot::Str(5)),
    (COMMUNITY_ID, Slot::Str(6)),
    (HOST, Slot::Str(7)),
    (EVENT, Slot::Event),
];

pub(super) fn schema_text() -> String {
    let mut s = String::from("message eve {\n");
    for (name, slot) in COLUMNS {
        let ty = match slot {
            Slot::Timestamp => "optional int64 {} (TIMESTAMP(MICROS,true));",
            Slot::Port(_) => "optional int32 {};",
            Slot::FlowId => "optional int64 {};",
            Slot::Str(_) => "optional binary {} (STRING);",
            Slot::Event => "required binary {} (STRING);",
        };
        s.push_str(&ty.replace("{}", name));
        s.push('\n');
    }
    s.push('}');
    s
}

pub(super) fn writer_properties() -> WriterProperties {
    let mut b = WriterProperties::builder().set_compression(Compression::SNAPPY);
    for name in [EVENT, TIMESTAMP, fields::FLOW_ID] {
        b = b.set_column_dictionary_enabled(ColumnPath::from(name), false);
    }
    b.set_column_statistics_enabled(ColumnPath::from(EVENT), EnabledStatistics::None)
        .build()
}

/// One nullable column of integers: values of the non-null rows, a definition level per row.
pub(super) struct Ints<T> {
    pub(super) values: Vec<T>,
    pub(super) def: Vec<i16>,
}

impl<T> Default for Ints<T> {
    fn default() -> Self {
        Ints {
            values: Vec::new(),
            def: Vec::new(),
        }
    }
}

impl<T> Ints<T> {
    pub(super) fn push(&mut self, v: Option<T>) {
        match v {
            Some(v) => {
                self.values.push(v);
                self.def.push(1);
            }
            None => self.def.push(0),
        }
    }

    pub(super) fn clear(&mut self) {
        self.values.clear();
        self.def.clear();
    }
}

/// One string column: byte ranges into [`Rows::text`] of the non-null rows, a definition level
/// per row (unused for the required `event` column).
#[derive(Default)]
pub(super) struct Strs {
    pub(super) spans: Vec<(usize, usize)>,
    pub(super) def: Vec<i16>,
}

impl Strs {
    pub(super) fn push(&mut self, text: &mut Vec<u8>, v: Option<&[u8]>) {
        match v {
            Some(v) => {
                let start = text.len();
                text.extend_from_slice(v);
                self.spans.push((start, text.len()));
                self.def.push(1);
            }
            None => self.def.push(0),
        }
    }

    pub(super) fn clear(&mut self) {
        self.spans.clear();
        self.def.clear();
    }
}

/// The rows of the row group being built. Every buffer keeps its capacity between groups.
#[derive(Default)]
pub(super) struct Rows {
    pub(super) len: usize,
    /// The text of every string value of these rows, `event` included.
    pub(super) text: Vec<u8>,
    pub(super) ts: Ints<i64>,
    pub(super) ports: [Ints<i32>; 2],
    pub(super) flow_id: Ints<i64>,
    pub(super) strs: [Strs; STR_COLUMNS],
    pub(super) events: Strs,
}

impl Rows {
    pub(super) fn clear(&mut self) {
        self.len = 0;
        self.text.clear();
        self.ts.clear();
        self.ports.iter_mut().for_each(Ints::clear);
        self.flow_id.clear();
        self.strs.iter_mut().for_each(Strs::clear);
        self.events.clear();
    }
}

pub(super) fn write_group(
    w: &mut SerializedFileWriter<File>,
    rows: &Rows,
    text: &Bytes,
    arrays: &mut Vec<ByteArray>,
) -> Result<(), ParquetError> {
    let mut rg = w.next_row_group()?;
    for (name, slot) in COLUMNS {
        let mut col = rg
            .next_column()?
            .ok_or_else(|| ParquetError::General(format!("schema has no column {name}")))?;
        match slot {
            Slot::Timestamp => {
                col.typed::<Int64Type>()
                    .write_batch(&rows.ts.values, Some(&rows.ts.def), None)?;
            }
            Slot::Port(i) => {
                let p = &rows.ports[i];
                col.typed::<Int32Type>().write_batch(&p.values, Some(&p.def), None)?;
            }
            Slot::FlowId => {
                let f = &rows.flow_id;
                col.typed::<Int64Type>().write_batch(&f.values, Some(&f.def), None)?;
            }
            Slot::Str(i) => {
                let s = &rows.strs[i];
                arrays.extend(s.spans.iter().map(|&(a, b)| ByteArray::from(text.slice(a..b))));
                col.typed::<ByteArrayType>().write_batch(arrays, Some(&s.def), None)?;
            }
            Slot::Event => {
                let s = &rows.events;
                arrays.extend(s.spans.iter().map(|&(a, b)| ByteArray::from(text.slice(a..b))));
                col.typed::<ByteArrayType>().write_batch(arrays, None, None)?;
            }
        }
        arrays.clear();
        col.close()?;
    }
    rg.close()?;
    Ok(())
}

/// Takes back the buffer behind `text` when nothing else holds a slice of it.
pub(super) fn reclaim(text: Bytes) -> Vec<u8> {
    let cap = text.len();
    match text.try_into_mut() {
        Ok(b) => {
            let mut v = Vec::from(b);
            v.clear();
            v
        }
        Err(_) => Vec::with_capacity(cap),
    }
}
