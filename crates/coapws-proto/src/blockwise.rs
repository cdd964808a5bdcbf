//! Block-wise transfer state (RFC 7959, and BERT from RFC 8323 §6).
//!
//! - Client side: [`Block2Collector`] is fed each response of a block-wise GET (or FETCH) and
//!   says what to ask for next or hands back the whole representation; it refuses blocks out of
//!   order or a representation that changes (ETag) on the way.
//! - Server side: [`Block1Collector`] reassembles a request body sent in Block1 pieces, and
//!   [`slice_block2`] cuts a response into the Block2 piece asked for, or into the first piece
//!   when the whole does not fit the peer's Max-Message-Size.
//!
//! Everything is bounded by a maximum body size.

use crate::message::Message;
use crate::option::{BlockValue, OptionNumber};
use bytes::{Bytes, BytesMut};

/// What a fed response means for the transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Collected {
    /// The representation is complete: the last response, carrying the whole payload and no
    /// Block2 option.
    Complete(Message),
    /// Ask for this block next (send it as the request's Block2 option).
    Next(BlockValue),
}

/// Why a block-wise transfer cannot go on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// The representation exceeds the configured maximum.
    #[error("block-wise body exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// A block that does not continue where the previous one ended.
    #[error("block at offset {got} where offset {expected} was expected")]
    OutOfOrder {
        /// Offset of the data so far.
        expected: usize,
        /// Offset the block claims.
        got: usize,
    },
    /// A non-final block whose size does not match its SZX.
    #[error("block of {len} bytes does not match its size exponent {szx}")]
    BadBlockSize {
        /// Payload length.
        len: usize,
        /// SZX.
        szx: u8,
    },
    /// The ETag changed between blocks: the resource changed under the transfer.
    #[error("representation changed during the block-wise transfer")]
    EtagChanged,
    /// A Block2 request for a block past the end of the representation.
    #[error("block {num} is past the end of the representation")]
    OutOfRange {
        /// The block number asked for.
        num: u32,
    },
}

/// The order and sizes of a block-wise body's blocks, without the data: where each block
/// goes and whether it may come (in order, whole units while more follow, within a limit).
/// [`Block1Collector`] and [`Block2Collector`] keep the data in memory with it; a server that
/// writes an upload to disk keeps only this.
#[derive(Clone, Copy, Debug)]
pub struct BlockSequence {
    limit: usize,
    received: usize,
}

impl BlockSequence {
    /// A body of at most `limit` bytes, nothing received yet.
    pub fn new(limit: usize) -> BlockSequence {
        BlockSequence { limit, received: 0 }
    }

    /// Bytes admitted so far.
    pub fn received(&self) -> usize {
        self.received
    }

    /// Admits the block `block` with `len` payload bytes: it must start where the body ends,
    /// and a block with more to follow must be whole (one block, or whole 1024-byte units for
    /// BERT). Returns the block's offset.
    pub fn admit(&mut self, block: BlockValue, len: usize) -> Result<usize, BlockError> {
        let offset = block.num as usize * block.size();
        if offset != self.received {
            return Err(BlockError::OutOfOrder {
                expected: self.received,
                got: offset,
            });
        }
        let whole_units = if block.is_bert() {
            len % block.size() == 0 && len != 0
        } else {
            len == block.size()
        };
        if block.more && !whole_units {
            return Err(BlockError::BadBlockSize {
                len,
                szx: block.szx,
            });
        }
        if self.received + len > self.limit {
            return Err(BlockError::TooLarge { limit: self.limit });
        }
        self.received += len;
        Ok(offset)
    }
}

/// A body being reassembled from blocks in memory: what Block1 and Block2 reassembly have in
/// common.
#[derive(Debug)]
struct Body {
    sequence: BlockSequence,
    bytes: BytesMut,
}

impl Body {
    fn new(limit: usize) -> Body {
        Body {
            sequence: BlockSequence::new(limit),
            bytes: BytesMut::new(),
        }
    }

    /// Appends the block `block` carries (see [`BlockSequence::admit`]).
    fn append(&mut self, block: BlockValue, payload: &[u8]) -> Result<(), BlockError> {
        self.sequence.admit(block, payload.len())?;
        self.bytes.extend_from_slice(payload);
        Ok(())
    }

    fn take(&mut self) -> Bytes {
        std::mem::take(&mut self.bytes).freeze()
    }
}

/// Reassembles a Block2 transfer.
#[derive(Debug)]
pub struct Block2Collector {
    body: Body,
    etag: Option<Option<Bytes>>,
}

impl Block2Collector {
    /// A collector accepting at most `limit` bytes in all.
    pub fn new(limit: usize) -> Block2Collector {
        Block2Collector {
            body: Body::new(limit),
            etag: None,
        }
    }

    /// Bytes collected so far.
    pub fn received(&self) -> usize {
        self.body.bytes.len()
    }

    /// Feeds the next response. A response without Block2 completes the transfer as it is
    /// (when it is the first) — servers answer small representations whole.
    pub fn feed(&mut self, mut response: Message) -> Result<Collected, BlockError> {
        let Some(block) = response.options.block2() else {
            // A whole representation (first answer, or a server giving up on blocks).
            return Ok(Collected::Complete(response));
        };
        let etag = response.options.get(OptionNumber::ETAG).cloned();
        match &self.etag {
            None => self.etag = Some(etag),
            Some(first) if *first != etag => return Err(BlockError::EtagChanged),
            Some(_) => {}
        }
        self.body.append(block, &response.payload)?;
        if block.more {
            return Ok(Collected::Next(BlockValue {
                num: (self.received() / block.size()) as u32,
                more: false,
                szx: block.szx,
            }));
        }
        response.options.remove(OptionNumber::BLOCK2);
        response.payload = self.body.take();
        Ok(Collected::Complete(response))
    }
}

/// What a server answers to one block of a Block1 upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Block1Step {
    /// More blocks are expected: answer 2.31 Continue carrying this Block1 value.
    Continue(BlockValue),
    /// The last block arrived: handle the request with this whole body, and put this Block1
    /// value (the last block, M = 0) in the final response.
    Complete {
        /// The reassembled body.
        body: Bytes,
        /// Block1 to echo in the response.
        block1: BlockValue,
    },
}

/// Reassembles a request body sent in Block1 pieces (RFC 7959 §2.3, BERT per RFC 8323 §6).
#[derive(Debug)]
pub struct Block1Collector {
    body: Body,
}

impl Block1Collector {
    /// A collector accepting at most `limit` bytes in all.
    pub fn new(limit: usize) -> Block1Collector {
        Block1Collector {
            body: Body::new(limit),
        }
    }

    /// Bytes collected so far.
    pub fn received(&self) -> usize {
        self.body.bytes.len()
    }

    /// Feeds the block carried by `block1` with `payload`.
    pub fn feed(&mut self, block1: BlockValue, payload: &[u8]) -> Result<Block1Step, BlockError> {
        self.body.append(block1, payload)?;
        if block1.more {
            Ok(Block1Step::Continue(block1))
        } else {
            Ok(Block1Step::Complete {
                body: self.body.take(),
                block1,
            })
        }
    }
}

/// Payload bytes left in a `max_message_size`-byte message for one block of `template`'s
/// body, once header, an 8-byte token, `template`'s options and the block options (Block1,
/// Block2, Size1, Size2 at their largest) are counted, in any framing. At least 16.
pub fn block_room(template: &Message, max_message_size: usize) -> usize {
    let mut head = Message::new(template.code).with_token(crate::Token::new(vec![0u8; 8]));
    head.options = template.options.clone();
    for n in [OptionNumber::BLOCK1, OptionNumber::BLOCK2] {
        head.options.set_uint(n, 0xff_ffff);
    }
    for n in [OptionNumber::SIZE1, OptionNumber::SIZE2] {
        head.options.set_uint(n, u32::MAX);
    }
    // TCP framing has the largest header of the three for a body this size; the payload
    // marker and up to 4 more length bytes come on top.
    let overhead = crate::codec::tcp::encoded_len(&head).unwrap_or(usize::MAX / 2) + 1 + 4;
    max_message_size.saturating_sub(overhead).max(16)
}

/// Largest SZX (≤ 6) whose block fits `max_payload` bytes; 0 (16 bytes) at the least.
pub fn fitting_szx(max_payload: usize) -> u8 {
    (0..=6u8)
        .rev()
        .find(|szx| 16usize << szx <= max_payload)
        .unwrap_or(0)
}

/// Where one Block2 piece lies in a representation: bytes `offset..offset + len`, sent with
/// `block` as its Block2 option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block2Window {
    /// First byte of the piece.
    pub offset: usize,
    /// Bytes in the piece.
    pub len: usize,
    /// The Block2 value to send with it.
    pub block: BlockValue,
}

/// The Block2 piece of a representation of `total` bytes that a request asked for
/// (`requested`), or — when it asked for none — the first piece if `total` is larger than
/// `max_payload`; `None` when the whole fits and no block was asked for. `bert` allows SZX 7
/// (the peer sent Block-Wise-Transfer and a Max-Message-Size above 1152). A handler that
/// reads a large body piecewise (from disk) uses this to read only the piece.
pub fn block2_window(
    total: usize,
    requested: Option<BlockValue>,
    max_payload: usize,
    bert: bool,
) -> Result<Option<Block2Window>, BlockError> {
    if requested.is_none() && total <= max_payload {
        return Ok(None);
    }
    let (num, szx) = match requested {
        Some(b) => {
            // The server may answer with a smaller block than asked (RFC 7959 §2.4).
            let wanted = if b.szx == 7 && !bert { 6 } else { b.szx };
            let szx = if wanted == 7 {
                if max_payload >= 1024 {
                    7
                } else {
                    fitting_szx(max_payload)
                }
            } else {
                wanted.min(fitting_szx(max_payload))
            };
            let offset = b.num as usize * b.size();
            let unit = if szx == 7 { 1024 } else { 16usize << szx };
            (offset / unit, szx)
        }
        None if bert && max_payload >= 2048 => (0, 7),
        None => (0, fitting_szx(max_payload)),
    };
    let unit = if szx == 7 { 1024 } else { 16usize << szx };
    let len = if szx == 7 {
        (max_payload / 1024).max(1) * 1024
    } else {
        unit
    };
    let offset = num * unit;
    if offset >= total && !(offset == 0 && total == 0) {
        return Err(BlockError::OutOfRange { num: num as u32 });
    }
    let end = (offset + len).min(total);
    Ok(Some(Block2Window {
        offset,
        len: end - offset,
        block: BlockValue {
            num: num as u32,
            more: end < total,
            szx,
        },
    }))
}

/// Cuts `response` into the Block2 piece a request asked for (`requested`), or — when the
/// request asked for none — into the first piece if the whole payload is larger than
/// `max_payload` (see [`block2_window`]). A response that needs no cutting comes back
/// unchanged. Size2 carries the total size on the first block.
pub fn slice_block2(
    mut response: Message,
    requested: Option<BlockValue>,
    max_payload: usize,
    bert: bool,
) -> Result<Message, BlockError> {
    let total = response.payload.len();
    let Some(w) = block2_window(total, requested, max_payload, bert)? else {
        return Ok(response);
    };
    response.payload = response.payload.slice(w.offset..w.offset + w.len);
    response.options.set(OptionNumber::BLOCK2, w.block.encode());
    if w.block.num == 0 {
        response.options.set_uint(
            OptionNumber::SIZE2,
            u32::try_from(total).unwrap_or(u32::MAX),
        );
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::code::Code;

    fn block(num: u32, more: bool, szx: u8, payload: &[u8]) -> Message {
        Message::response(Code::CONTENT, payload.to_vec())
            .with_option(OptionNumber::BLOCK2, BlockValue { num, more, szx }.encode())
    }

    #[test]
    fn reassembles_in_order() {
        let mut c = Block2Collector::new(10_000);
        let a = [b'a'; 64];
        assert_eq!(
            c.feed(block(0, true, 2, &a)),
            Ok(Collected::Next(BlockValue {
                num: 1,
                more: false,
                szx: 2
            }))
        );
        match c.feed(block(1, false, 2, b"tail")).unwrap() {
            Collected::Complete(m) => {
                assert_eq!(m.payload.len(), 68);
                assert!(m.options.block2().is_none());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bert_counts_kilobytes() {
        let mut c = Block2Collector::new(1 << 20);
        let three_k = vec![0u8; 3072];
        assert_eq!(
            c.feed(block(0, true, 7, &three_k)),
            Ok(Collected::Next(BlockValue {
                num: 3,
                more: false,
                szx: 7
            }))
        );
        assert!(
            matches!(c.feed(block(3, false, 7, b"x")), Ok(Collected::Complete(m)) if m.payload.len() == 3073)
        );
    }

    #[test]
    fn block1_reassembly() {
        let mut c = Block1Collector::new(1000);
        let b = |num, more| BlockValue { num, more, szx: 2 };
        assert_eq!(
            c.feed(b(0, true), &[1; 64]),
            Ok(Block1Step::Continue(b(0, true)))
        );
        assert!(matches!(
            c.feed(b(2, true), &[1; 64]),
            Err(BlockError::OutOfOrder { .. })
        ));
        match c.feed(b(1, false), b"end").unwrap() {
            Block1Step::Complete { body, block1 } => {
                assert_eq!(body.len(), 67);
                assert_eq!(block1, b(1, false));
            }
            other => panic!("{other:?}"),
        }
        let mut c = Block1Collector::new(100);
        c.feed(b(0, true), &[0; 64]).unwrap();
        assert_eq!(
            c.feed(b(1, true), &[0; 64]),
            Err(BlockError::TooLarge { limit: 100 })
        );
    }

    #[test]
    fn block2_slicing() {
        let full = Message::response(
            Code::CONTENT,
            (0..5000u32).map(|i| i as u8).collect::<Vec<_>>(),
        );
        // fits: unchanged
        assert_eq!(slice_block2(full.clone(), None, 6000, false).unwrap(), full);
        // does not fit, no BERT: largest fitting block, Size2 on block 0
        let first = slice_block2(full.clone(), None, 1100, false).unwrap();
        assert_eq!(
            first.options.block2(),
            Some(BlockValue {
                num: 0,
                more: true,
                szx: 6
            })
        );
        assert_eq!(first.options.get_uint(OptionNumber::SIZE2), Some(5000));
        assert_eq!(first.payload.len(), 1024);
        // BERT: several KiB per message
        let bert = slice_block2(full.clone(), None, 3000, true).unwrap();
        assert_eq!(
            bert.options.block2(),
            Some(BlockValue {
                num: 0,
                more: true,
                szx: 7
            })
        );
        assert_eq!(bert.payload.len(), 2048);
        // a requested later block; smaller than asked when it would not fit
        let asked = BlockValue {
            num: 1,
            more: false,
            szx: 6,
        };
        let b = slice_block2(full.clone(), Some(asked), 600, false).unwrap();
        assert_eq!(
            b.options.block2(),
            Some(BlockValue {
                num: 2,
                more: true,
                szx: 5
            })
        );
        assert_eq!(&b.payload[..], &full.payload[1024..1536]);
        // reassembling everything gives the whole back
        let mut c = Block2Collector::new(1 << 20);
        let mut next = None;
        let whole = loop {
            match c
                .feed(slice_block2(full.clone(), next, 1100, false).unwrap())
                .unwrap()
            {
                Collected::Complete(m) => break m,
                Collected::Next(b) => next = Some(b),
            }
        };
        assert_eq!(whole.payload, full.payload);
        let past = BlockValue {
            num: 100,
            more: false,
            szx: 6,
        };
        assert_eq!(
            slice_block2(full, Some(past), 1100, false),
            Err(BlockError::OutOfRange { num: 100 })
        );
    }

    #[test]
    fn room_counts_header_and_options() {
        let m = Message::request(Code::POST, "/a/b");
        let room = block_room(&m, 1152);
        assert!(room < 1152 - 20 && room > 1024, "{room}");
        let mut full = m.clone().with_payload(vec![0u8; room]);
        full.token = crate::Token::new(vec![1; 8]);
        full.options.set(
            OptionNumber::BLOCK1,
            BlockValue {
                num: 0xfffff,
                more: true,
                szx: 6,
            }
            .encode(),
        );
        full.options.set_uint(OptionNumber::SIZE1, u32::MAX);
        assert!(crate::codec::tcp::encoded_len(&full).unwrap() <= 1152);
        assert!(crate::codec::udp::encoded_len(&full).unwrap() <= 1152);
        assert_eq!(block_room(&m, 10), 16);
    }

    #[test]
    fn refuses_bad_transfers() {
        let mut c = Block2Collector::new(100);
        assert!(matches!(
            c.feed(block(1, true, 2, &[0; 64])),
            Err(BlockError::OutOfOrder { .. })
        ));
        let mut c = Block2Collector::new(100);
        assert!(matches!(
            c.feed(block(0, true, 2, &[0; 10])),
            Err(BlockError::BadBlockSize { .. })
        ));
        let mut c = Block2Collector::new(100);
        c.feed(block(0, true, 2, &[0; 64])).unwrap();
        assert_eq!(
            c.feed(block(1, true, 2, &[0; 64])),
            Err(BlockError::TooLarge { limit: 100 })
        );
        let mut c = Block2Collector::new(1000);
        c.feed(block(0, true, 2, &[0; 64]).with_option(OptionNumber::ETAG, vec![1]))
            .unwrap();
        let changed = block(1, false, 2, b"x").with_option(OptionNumber::ETAG, vec![2]);
        assert_eq!(c.feed(changed), Err(BlockError::EtagChanged));
    }
}
