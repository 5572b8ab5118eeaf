//! Records an output has accepted and not yet delivered: the buffer of the file and socket
//! outputs. Records are whole lines (each ends with `\n`, and JSON text holds no raw newline),
//! so counting newlines counts records. A record counts as written only once the kernel has
//! taken all of it; a delivery that stops inside a record is rolled back to the record's
//! start by the sink (file: truncated; stream: sent again whole on the next connection).

/// The held records of one output.
#[derive(Default)]
pub(crate) struct Held {
    /// Whole records, oldest first.
    pub buf: Vec<u8>,
    /// Bytes at the front of `buf` already handed to the kernel (on the current file or
    /// connection); they may end inside a record.
    pub sent: usize,
    /// Records delivered since [`Held::take_delivered`].
    delivered: u64,
    /// Records in `buf`.
    count: u64,
}

impl Held {
    /// Adds one record (ending with its newline).
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        self.count += 1;
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Bytes held (sent or not).
    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    /// The records held.
    pub(crate) fn records(&self) -> u64 {
        self.count
    }

    /// The unsent bytes.
    pub(crate) fn unsent(&self) -> &[u8] {
        &self.buf[self.sent..]
    }

    /// The end of the last whole record among the sent bytes (0 when none is whole).
    pub(crate) fn sent_boundary(&self) -> usize {
        memchr::memrchr(b'\n', &self.buf[..self.sent]).map_or(0, |i| i + 1)
    }

    /// The first `upto` bytes (whole records) are delivered: counted and taken out.
    pub(crate) fn delivered_upto(&mut self, upto: usize) {
        if upto == 0 {
            return;
        }
        let n = memchr::memchr_iter(b'\n', &self.buf[..upto]).count() as u64;
        self.delivered += n;
        self.count -= n;
        self.buf.drain(..upto);
        self.sent = self.sent.saturating_sub(upto);
    }

    /// Everything sent is delivered and whole records end where it ends; the part of a
    /// record sent (a failed delivery) is to be sent again: returns how many bytes of it
    /// were sent.
    pub(crate) fn settle(&mut self) -> usize {
        if self.sent == self.buf.len() {
            // Everything went out (the usual case): no need to look for record ends.
            self.delivered += std::mem::take(&mut self.count);
            self.buf.clear();
            self.sent = 0;
            return 0;
        }
        let whole = self.sent_boundary();
        let torn = self.sent - whole;
        self.sent = whole;
        self.delivered_upto(whole);
        torn
    }

    /// Whether records were delivered since the last [`Held::take_delivered`].
    pub(crate) fn has_delivered(&self) -> bool {
        self.delivered > 0
    }

    /// Records delivered since the last call.
    pub(crate) fn take_delivered(&mut self) -> u64 {
        std::mem::take(&mut self.delivered)
    }

    /// Gives up the held records (the engine is stopping and the output cannot take them):
    /// returns how many there were.
    pub(crate) fn abandon(&mut self) -> u64 {
        self.buf.clear();
        self.sent = 0;
        std::mem::take(&mut self.count)
    }

    /// Takes out the unsent record of `len` bytes (with its newline) that starts at `sent`:
    /// it can never be delivered.
    pub(crate) fn reject_next(&mut self, len: usize) {
        let start = self.sent;
        self.buf.drain(start..start + len);
        self.count -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::Held;

    #[test]
    fn a_partly_sent_record_is_not_counted_and_stays_whole() {
        let mut h = Held::default();
        h.push(b"{\"a\":1}\n");
        h.push(b"{\"b\":2}\n");
        h.push(b"{\"c\":3}\n");
        // 12 bytes out: the first record and half of the second.
        h.sent = 12;
        assert_eq!(h.settle(), 4);
        assert_eq!(h.take_delivered(), 1);
        assert_eq!(h.unsent(), b"{\"b\":2}\n{\"c\":3}\n");
        assert_eq!(h.records(), 2);
        h.sent = h.len();
        assert_eq!(h.settle(), 0);
        assert_eq!(h.take_delivered(), 2);
        assert!(h.is_empty());
    }

    #[test]
    fn abandoning_counts_what_was_held() {
        let mut h = Held::default();
        h.push(b"1\n");
        h.push(b"2\n");
        h.push(b"3\n");
        h.sent = 3;
        assert_eq!(h.abandon(), 3);
        assert!(h.is_empty());
        assert_eq!(h.take_delivered(), 0);
    }
}
