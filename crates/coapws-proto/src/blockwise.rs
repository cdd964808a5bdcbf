//! Block-wise transfer state (RFC 7959, and BERT from RFC 8323 §6): reassembling a response
//! that a server sends in Block2 pieces.
//!
//! [`Block2Collector`] is fed each response of a block-wise GET (or FETCH) and says what to
//! ask for next or hands back the whole representation. It is bounded by a maximum size and
//! refuses blocks out of order or a representation that changes (ETag) on the way.

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
}

/// Reassembles a Block2 transfer.
#[derive(Debug)]
pub struct Block2Collector {
    limit: usize,
    body: BytesMut,
    etag: Option<Option<Bytes>>,
}

impl Block2Collector {
    /// A collector accepting at most `limit` bytes in all.
    pub fn new(limit: usize) -> Block2Collector {
        Block2Collector {
            limit,
            body: BytesMut::new(),
            etag: None,
        }
    }

    /// Bytes collected so far.
    pub fn received(&self) -> usize {
        self.body.len()
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
        let unit = block.size();
        let offset = block.num as usize * unit;
        if offset != self.body.len() {
            return Err(BlockError::OutOfOrder {
                expected: self.body.len(),
                got: offset,
            });
        }
        let len = response.payload.len();
        let whole_units = if block.is_bert() {
            len % unit == 0 && len > 0
        } else {
            len == unit
        };
        if block.more && !whole_units {
            return Err(BlockError::BadBlockSize {
                len,
                szx: block.szx,
            });
        }
        if self.body.len() + len > self.limit {
            return Err(BlockError::TooLarge { limit: self.limit });
        }
        self.body.extend_from_slice(&response.payload);
        if block.more {
            return Ok(Collected::Next(BlockValue {
                num: (self.body.len() / unit) as u32,
                more: false,
                szx: block.szx,
            }));
        }
        response.options.remove(OptionNumber::BLOCK2);
        response.payload = std::mem::take(&mut self.body).freeze();
        Ok(Collected::Complete(response))
    }
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
