//! Series to queue blocks of items, one item per sample in the type's wire
//! form (see the module docs of [`crate::sink::event`]).

use super::config::{EventConfig, FileFormat, Target};
use super::shape::EventRef;
use super::{elasticsearch, push_item, splunk, syslog, webhook};

/// Writes the item of one event; `false` when the type cannot carry it
/// (a Splunk metric without a number).
pub fn write_item(cfg: &EventConfig, ev: &EventRef<'_>, out: &mut Vec<u8>) -> bool {
    let shape = &cfg.shape;
    match &cfg.target {
        Target::Syslog(s) => syslog::write_message(out, s, shape, ev),
        Target::Elasticsearch(e) => elasticsearch::write_item(out, e, shape, ev),
        Target::Splunk(s) => return splunk::write_item(out, s, shape, ev),
        Target::Webhook(w) => webhook::write_item(out, w, shape, ev),
        Target::File(f) => match f.format {
            FileFormat::Jsonl => {
                shape.write_json(out, ev);
                out.push(b'\n');
            }
            FileFormat::Csv => shape.write_csv(out, ev),
        },
    }
    true
}

/// Cuts events into blocks of at most `max_items` items.
pub struct BlockBuilder {
    max_items: usize,
    block: Vec<u8>,
    in_block: u64,
    blocks: Vec<(Vec<u8>, u64)>,
    /// Events the type could not carry.
    pub skipped: u64,
}

impl BlockBuilder {
    pub fn new(max_items: usize) -> BlockBuilder {
        BlockBuilder {
            max_items: max_items.max(1),
            block: Vec::new(),
            in_block: 0,
            blocks: Vec::new(),
            skipped: 0,
        }
    }

    pub fn add(&mut self, cfg: &EventConfig, ev: &EventRef<'_>) {
        let at = self.block.len();
        let mut carried = true;
        push_item(&mut self.block, |out| carried = write_item(cfg, ev, out));
        if !carried {
            self.block.truncate(at);
            self.skipped += 1;
            return;
        }
        self.in_block += 1;
        if self.in_block as usize >= self.max_items {
            self.cut();
        }
    }

    fn cut(&mut self) {
        if self.in_block > 0 {
            self.blocks
                .push((std::mem::take(&mut self.block), self.in_block));
            self.in_block = 0;
        }
    }

    /// The blocks: bytes and events in each.
    pub fn finish(mut self) -> Vec<(Vec<u8>, u64)> {
        self.cut();
        self.blocks
    }
}
