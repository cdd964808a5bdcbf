//! The token sets of the connection machine's bookkeeping (requests outstanding either way).
//! Tokens are kept as values (RFC 8323 §3.2 tokens are at most 8 bytes), so adding or
//! removing one neither hashes nor touches the buffer the token arrived in. A few requests
//! in flight is the usual case: up to [`SPILL`] tokens are a list searched in order, more
//! move to a hash set. Tokens over 8 bytes (a caller's own; RFC 8974 lengths) are rare and
//! kept whole in a list of their own. An empty set holds no memory beyond a small list kept
//! for the next burst.

use crate::message::Token;
use std::collections::HashSet;

/// A token of at most 8 bytes as a value: its bytes and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct TokenKey {
    bytes: [u8; 8],
    len: u8,
}

impl TokenKey {
    /// The key of `token`, or `None` when it is longer than 8 bytes.
    fn of(token: &Token) -> Option<TokenKey> {
        let b = token.as_bytes();
        let len = u8::try_from(b.len()).ok().filter(|&n| n <= 8)?;
        let mut bytes = [0; 8];
        bytes[..b.len()].copy_from_slice(b);
        Some(TokenKey { bytes, len })
    }
}

/// Tokens in a list up to this many; a hash set beyond.
const SPILL: usize = 32;
/// A list of at most this capacity is kept when the set empties (the next burst then needs
/// no allocation); a larger one is freed.
const KEEP: usize = 16;

/// A set of tokens.
#[derive(Clone, Debug, Default)]
pub(crate) struct TokenSet {
    list: Vec<TokenKey>,
    /// All the short tokens, once there were more than [`SPILL`] (then `list` is empty).
    hashed: HashSet<TokenKey>,
    /// Tokens over 8 bytes.
    long: Vec<Token>,
}

impl TokenSet {
    /// True if `token` is in the set.
    pub(crate) fn contains(&self, token: &Token) -> bool {
        let Some(k) = TokenKey::of(token) else {
            return self.long.contains(token);
        };
        if self.hashed.is_empty() {
            self.list.contains(&k)
        } else {
            self.hashed.contains(&k)
        }
    }

    /// Adds `token`; false if it was in already.
    pub(crate) fn insert(&mut self, token: &Token) -> bool {
        let Some(k) = TokenKey::of(token) else {
            if self.long.contains(token) {
                return false;
            }
            self.long.push(token.clone());
            return true;
        };
        if !self.hashed.is_empty() {
            return self.hashed.insert(k);
        }
        if self.list.contains(&k) {
            return false;
        }
        if self.list.len() < SPILL {
            if self.list.capacity() == 0 {
                self.list.reserve_exact(KEEP / 2);
            }
            self.list.push(k);
        } else {
            self.hashed = self.list.drain(..).chain([k]).collect();
            self.list = Vec::new();
        }
        true
    }

    /// Removes `token`; false if it was not in.
    pub(crate) fn remove(&mut self, token: &Token) -> bool {
        let Some(k) = TokenKey::of(token) else {
            let Some(i) = self.long.iter().position(|t| t == token) else {
                return false;
            };
            self.long.swap_remove(i);
            if self.long.is_empty() {
                self.long = Vec::new();
            }
            return true;
        };
        if !self.hashed.is_empty() {
            let removed = self.hashed.remove(&k);
            if self.hashed.is_empty() {
                self.hashed = HashSet::new();
            }
            return removed;
        }
        let Some(i) = self.list.iter().position(|t| *t == k) else {
            return false;
        };
        self.list.swap_remove(i);
        if self.list.is_empty() && self.list.capacity() > KEEP {
            self.list = Vec::new();
        }
        true
    }

    /// Number of tokens.
    pub(crate) fn len(&self) -> usize {
        self.list.len() + self.hashed.len() + self.long.len()
    }

    /// True if there are none.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes all and frees the memory.
    pub(crate) fn clear(&mut self) {
        *self = TokenSet::default();
    }
}

#[cfg(test)]
mod tests {
    use super::{KEEP, SPILL, TokenSet};
    use crate::message::Token;

    #[test]
    fn holds_each_token_once_in_a_list_then_a_hash_set() {
        let mut s = TokenSet::default();
        assert!(s.insert(&Token::from_u64(1)));
        assert!(!s.insert(&Token::from_u64(1)), "in already");
        for i in 2..=SPILL as u64 + 10 {
            assert!(s.insert(&Token::from_u64(i)));
        }
        assert_eq!(s.len(), SPILL + 10);
        assert!(s.list.is_empty() && !s.hashed.is_empty(), "spilled");
        assert!(s.contains(&Token::from_u64(7)));
        assert!(!s.insert(&Token::from_u64(7)));
        for i in 1..=SPILL as u64 + 10 {
            assert!(s.remove(&Token::from_u64(i)), "{i}");
        }
        assert!(s.is_empty());
        assert_eq!(s.hashed.capacity(), 0, "the hash set is freed once drained");
        assert!(!s.remove(&Token::from_u64(1)));
    }

    #[test]
    fn tokens_of_other_lengths_are_other_tokens() {
        let mut s = TokenSet::default();
        s.insert(&Token::new(vec![0u8]));
        assert!(!s.contains(&Token::EMPTY));
        assert!(!s.contains(&Token::new(vec![0u8, 0])));
        assert!(s.insert(&Token::EMPTY));
        assert_eq!(s.len(), 2);
        assert!(s.remove(&Token::new(vec![0u8])));
        assert!(s.contains(&Token::EMPTY));
    }

    #[test]
    fn tokens_longer_than_eight_bytes_are_told_apart() {
        // Alike in their first 8 bytes and their length: two tokens all the same.
        let a = Token::new(vec![7u8; 9]);
        let mut b = vec![7u8; 9];
        b[8] = 8;
        let b = Token::new(b);
        let mut s = TokenSet::default();
        assert!(s.insert(&a));
        assert!(!s.contains(&b));
        assert!(s.insert(&b), "another token");
        assert!(!s.insert(&a));
        assert_eq!(s.len(), 2);
        assert!(s.remove(&a));
        assert!(s.contains(&b) && !s.contains(&a));
        assert!(s.remove(&b) && s.is_empty());
        assert_eq!(s.long.capacity(), 0);
    }

    #[test]
    fn a_small_list_is_kept_for_the_next_burst_and_a_large_one_freed() {
        let mut s = TokenSet::default();
        assert_eq!(s.list.capacity(), 0, "an unused set holds nothing");
        for i in 0..4 {
            s.insert(&Token::from_u64(i));
        }
        for i in 0..4 {
            s.remove(&Token::from_u64(i));
        }
        assert!(s.list.capacity() > 0 && s.list.capacity() <= KEEP);
        for i in 0..(KEEP as u64 + 1) {
            s.insert(&Token::from_u64(i));
        }
        for i in 0..(KEEP as u64 + 1) {
            s.remove(&Token::from_u64(i));
        }
        assert_eq!(s.list.capacity(), 0);
        s.insert(&Token::from_u64(9));
        s.clear();
        assert!(s.is_empty() && s.list.capacity() == 0);
    }
}
